//! W12 (passivation, see [`crate::lifecycle`]) under the process's global
//! allocator: which allocator gives the memory of idle workers that ended
//! back to the operating system, so that RSS falls after passivation.
//!
//! `cargo bench -p gen_registry_peers --bench allocators [--features jemalloc | --features mimalloc] -- [--quick]`:
//! one allocator a run (the bench installs jemalloc or mimalloc as the
//! global allocator with the feature, the system's otherwise), one markdown
//! row. RSS is read when every worker has ended, again after 12 s (longer
//! than jemalloc's default 10 s decay of unused pages), and, under the
//! system allocator (glibc's), after `malloc_trim(0)`, the call an
//! application makes to hand glibc's free memory back.

use crate::common::rss_bytes;
use crate::lifecycle::{Cached, call_all, mib, wait_empty};
use gen_registry::{GenRegistry, Options};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Runs W12 once over `ids` ids (1,000,000; 100,000 with `--quick`) and
/// prints its row, `allocator` naming the global allocator.
pub fn main(allocator: &str) {
    let quick = std::env::args().any(|a| a == "--quick");
    let ids: u32 = if quick { 100_000 } else { 1_000_000 };
    let idle = Duration::from_secs(1);
    let starts = Arc::new(AtomicU64::new(0));
    let r = GenRegistry::<Cached>::new(Options::default().idle_timeout(idle)).unwrap();
    // Warm the executor and the timer, then let the warm-up idle out.
    call_all(&r, &starts, (0..1_000).collect(), 64);
    wait_empty(&r, idle);
    let before = rss_bytes();
    call_all(&r, &starts, (1_000..1_000 + ids).collect(), 64);
    let peak = rss_bytes();
    wait_empty(&r, idle);
    let ended = rss_bytes();
    // A measurement's pause, not a wait on a condition: the allocator's
    // own timers return memory on their schedule.
    std::thread::sleep(Duration::from_secs(12));
    let settled = rss_bytes();
    let trimmed = trim().map(|()| rss_bytes());
    let kept = |rss: u64| rss.saturating_sub(before) as f64 / f64::from(ids);
    println!(
        "| {allocator} | {ids} | {:.1} | {:.1} | {:.1} ({:.0} B an id) | {:.1} ({:.0} B an id) | {} |",
        mib(before),
        mib(peak),
        mib(ended),
        kept(ended),
        mib(settled),
        kept(settled),
        trimmed.map_or("—".to_owned(), |rss| format!(
            "{:.1} ({:.0} B an id)",
            mib(rss),
            kept(rss)
        )),
    );
    futures::executor::block_on(r.shutdown());
}

/// `malloc_trim(0)` under glibc's allocator; `None` under another.
fn trim() -> Option<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !cfg!(any(feature = "jemalloc", feature = "mimalloc")) {
        // SAFETY: malloc_trim has no preconditions; it only releases free
        // memory of glibc's heap.
        unsafe { libc::malloc_trim(0) };
        return Some(());
    }
    None
}
