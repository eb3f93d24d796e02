//! A heap that needs a new page for a class takes, among its segment's
//! free pages, one that last held blocks of that size: its committed
//! memory is laid out for the class already, whereas a page that held
//! other blocks keeps resident whatever it touched past the new class's
//! carvings. (On `benches/programs/prodcons`, whose pages empty and are
//! taken again tens of thousands of times a second, the first free page in
//! the segment's order left peak RSS 5-9% higher.)
//!
//! How the test sees it: a fresh thread fills pages of 1,280-byte blocks,
//! then pages of 640-byte blocks, and frees every page of each class but
//! the last; its next collection gives the empty ones back to the segment,
//! so both classes leave free, committed pages there, the 1,280-byte ones
//! first in its order. The 640-byte blocks allocated next, once the kept
//! page is full, must land on a page that held 640-byte blocks (the first
//! free page in order was a 1,280-byte one: the test fails without the
//! preference).

use std::alloc::{alloc, dealloc, Layout};
use std::sync::{Arc, Barrier};
use std::thread;

use shrinkalloc::options::{set, Opt};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// Small pages are 64 KiB, aligned in their segment (the first one starts
/// past the header, inside the same 64 KiB).
const PAGE_SHIFT: u32 = 16;
/// The class whose free pages come first in the segment.
const SIZE_B: usize = 1280;
/// The class that takes a page again.
const SIZE_A: usize = 640;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

fn take(size: usize) -> usize {
    // SAFETY: a non-zero size.
    let p = unsafe { alloc(layout(size)) };
    assert!(!p.is_null());
    // SAFETY: `p` holds `size` bytes.
    unsafe { p.write_bytes(1, size) };
    p as usize
}

fn give(p: usize, size: usize) {
    // SAFETY: `p` came from `take(size)` and is freed once.
    unsafe { dealloc(p as *mut u8, layout(size)) };
}

/// Allocates `pages` pages' worth of `size`-byte blocks and frees every
/// page but the one carved last (the one the class keeps). Returns the
/// freed pages and the blocks still live. The test's own vectors are sized
/// up front, in other classes than the two it watches.
fn fill_and_free(size: usize, pages: usize) -> (Vec<usize>, Vec<usize>) {
    let n = pages * (1 << PAGE_SHIFT) / size;
    let mut blocks = Vec::with_capacity(n);
    blocks.extend((0..n).map(|_| take(size)));
    let last = blocks[n - 1] >> PAGE_SHIFT;
    let (mut freed, mut kept) = (Vec::with_capacity(pages + 2), Vec::with_capacity(n));
    for b in blocks {
        let page = b >> PAGE_SHIFT;
        if page == last {
            kept.push(b);
            continue;
        }
        give(b, size);
        if !freed.contains(&page) {
            freed.push(page);
        }
    }
    assert!(freed.len() >= 2, "{size}-byte blocks took only {} pages", freed.len() + 1);
    (freed, kept)
}

#[test]
fn a_class_takes_back_a_free_page_that_held_its_size() {
    // No free page is purged by age while the test runs: every freed page
    // stays free and committed.
    set(Opt::PurgeDelayMs, 60_000);
    // A barrier rather than channels: a channel's send allocates, and its
    // block would land on one of the pages the test frees.
    let barrier = Arc::new(Barrier::new(2));
    let worker_barrier = Arc::clone(&barrier);
    let worker = thread::spawn(move || {
        let (freed_b, kept_b) = fill_and_free(SIZE_B, 4);
        let (freed_a, kept_a) = fill_and_free(SIZE_A, 4);
        // Pages a thread empties itself wait for its heap's next collection
        // to leave their queues: a `purge()` from another thread asks for
        // one at this thread's next slow path, after the purge is done, so
        // the pages go back to the segment free and committed.
        worker_barrier.wait();
        worker_barrier.wait();
        // The setup the old order fails on: a page that held 1,280-byte
        // blocks comes first among the free ones.
        let first_free = *freed_b.iter().chain(&freed_a).min().unwrap();
        assert!(
            freed_b.contains(&first_free),
            "setup: the first free page {first_free:#x} held 640-byte blocks ({freed_a:x?}), not 1,280-byte ones ({freed_b:x?})"
        );
        let kept_page = kept_a[0] >> PAGE_SHIFT;
        let mut more = Vec::with_capacity(300);
        let landed = loop {
            let b = take(SIZE_A);
            more.push(b);
            if b >> PAGE_SHIFT != kept_page {
                break b >> PAGE_SHIFT;
            }
            assert!(more.len() <= 256, "640-byte blocks stayed on page {kept_page:#x}");
        };
        assert!(
            freed_a.contains(&landed),
            "a new 640-byte page went to {landed:#x}, not to one of the free pages that held 640-byte blocks \
             ({freed_a:x?}); those that held 1,280-byte blocks: {freed_b:x?}"
        );
        more.into_iter().chain(kept_a).for_each(|b| give(b, SIZE_A));
        kept_b.into_iter().for_each(|b| give(b, SIZE_B));
    });
    barrier.wait();
    shrinkalloc::purge();
    barrier.wait();
    worker.join().unwrap();
}
