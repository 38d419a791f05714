//! What the fuzz targets share: an allocator that measures how many bytes a
//! decoder holds at its peak, so a target can assert that decoding is
//! bounded by the bytes actually present and never by a length field the
//! input merely declares (a 4-byte "length 4 GiB" must not reserve 4 GiB).
//!
//! Each target installs [`Peak`] as its global allocator and wraps the call
//! under test in [`measure`]. libFuzzer runs inputs on one thread, so the
//! counters see only the measured call while it runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes currently allocated through [`Peak`].
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Highest [`LIVE`] since the last [`measure`] began.
static HIGH: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting live bytes and their high-water mark.
pub struct Peak;

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    HIGH.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's own pointer
// and layout; the counters are plain atomics and never touch the memory.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours, passed through.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            grew(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours, passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the most bytes it held at once
/// beyond what was live before it started (its result included).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    HIGH.store(before, Ordering::Relaxed);
    let out = f();
    let high = HIGH.load(Ordering::Relaxed);
    (out, high.saturating_sub(before))
}
