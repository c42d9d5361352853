//! `cargo bench -p gen_registry_peers --bench allocators [--features jemalloc | --features mimalloc] -- [--quick]`:
//! W12's RSS after passivation under one global allocator (see the docs of
//! `gen_registry_peers::allocators`).

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// With both features (`--all-features`), jemalloc.
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let name = if cfg!(feature = "jemalloc") {
        "jemalloc (tikv-jemallocator)"
    } else if cfg!(feature = "mimalloc") {
        "mimalloc"
    } else {
        "system (glibc)"
    };
    gen_registry_peers::allocators::main(name);
}
