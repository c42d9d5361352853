//! `cargo bench -p gen_registry_peers --bench peers -- [--quick] [--scale [--sizes N,N]] [--json FILE [--charts DIR]] [--markdown FILE] [--system NAME]`:
//! gen_registry against ractor, kameo and Bastion children groups on the
//! workload W1–W11 (see the crate docs of `gen_registry_peers`).

fn main() {
    gen_registry_peers::main();
}
