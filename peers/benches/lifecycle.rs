//! `cargo bench -p gen_registry_peers --bench lifecycle -- [--quick]`: W12
//! (idle passivation) and W13 (capacity) (see the docs of
//! `gen_registry_peers::lifecycle`).

fn main() {
    gen_registry_peers::lifecycle::main();
}
