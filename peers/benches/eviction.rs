//! `cargo bench -p gen_registry_peers --bench eviction -- [--quick] [--runs K] [--part hit|access|start]`:
//! the eviction policy study (see the docs of
//! `gen_registry_peers::eviction_study`).

fn main() {
    gen_registry_peers::eviction_study::main();
}
