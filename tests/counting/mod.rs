//! A counting global allocator for the test binaries that measure memory
//! (soak, footprint): the live heap bytes of the process, and the
//! allocations each thread made. A binary installs it with
//! `#[global_allocator] static ALLOCATOR: Counting = Counting;`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

/// The allocator: the system's, counted.
pub struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Allocations made by the current thread. Const-initialised and without
    /// a destructor, so the allocator may use it.
    static THREAD_ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn counted(size: usize) {
    LIVE_BYTES.fetch_add(size as isize, Ordering::Relaxed);
    let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            counted(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            counted(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
            counted(new_size);
        }
        p
    }
}

/// Allocations the current thread has made so far.
pub fn thread_allocations() -> usize {
    THREAD_ALLOCATIONS.with(Cell::get)
}

/// Live heap bytes once the process is quiet: sampled until two samples 20 ms
/// apart agree (background threads — the executor, the timer, the id table's
/// deferred reclamation — may still be finishing), for at most 5 s.
pub fn settled_heap() -> isize {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = LIVE_BYTES.load(Ordering::SeqCst);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = LIVE_BYTES.load(Ordering::SeqCst);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The settled live heap once it is within `range`, sampled again until it
/// is or `within` has passed, for a check of what an operation that has
/// returned gives back: ended workers and the id table's deferred
/// reclamation free their memory on other threads, which a loaded machine
/// may not run for longer than [`settled_heap`] waits. The caller checks the
/// value returned against `range`.
pub fn settled_heap_within(range: impl std::ops::RangeBounds<isize>, within: Duration) -> isize {
    let deadline = Instant::now() + within;
    loop {
        let heap = settled_heap();
        if range.contains(&heap) || Instant::now() > deadline {
            return heap;
        }
    }
}
