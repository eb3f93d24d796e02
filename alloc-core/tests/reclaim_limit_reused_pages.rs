//! The hard limit holds when a page that is free but still committed is
//! taken for a class of larger blocks: the page's first carving may commit
//! more than the page had touched, and that difference is charged like any
//! other commitment (issue 15: "the first carving of a committed-but-free
//! page is not checked").
//!
//! How the test gets such a page next to the line: a 128 KiB medium page B
//! holds one 9 KiB block (its first carving: 12 KiB) beside a full page A
//! of the same class; both frees leave B empty on its queue. Another
//! thread's `purge()` then asks every heap to give back its empty pages at
//! its next slow path — after the purge itself, so B stays committed. The
//! next allocation, a 128 KiB block, releases B and takes it at once: its
//! first carving commits 116 KiB more than B had touched.

mod reclaim_support;

use std::alloc::{alloc, dealloc, Layout};
use std::thread;
use std::time::Duration;

use reclaim_support::{committed, watchdog, MIB};
use shrinkalloc::options::{set, Opt};
use shrinkalloc::reclaim::{set_hard_limit, set_soft_limit};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 16).unwrap()
}

/// A block of `size` bytes, touched so its commitment is real; null when
/// refused.
fn take(size: usize) -> *mut u8 {
    // SAFETY: a non-zero size.
    let p = unsafe { alloc(layout(size)) };
    if !p.is_null() {
        // SAFETY: `p` holds `size` bytes.
        unsafe { p.write_bytes(7, size) };
    }
    p
}

fn give(p: *mut u8, size: usize) {
    // SAFETY: `p` came from `take(size)` and is freed once.
    unsafe { dealloc(p, layout(size)) };
}

#[test]
fn first_carving_of_a_reused_page_never_passes_the_hard_limit() {
    watchdog(Duration::from_secs(60), "the reused-page limit test");
    // No free page is purged by age while the test runs.
    set(Opt::PurgeDelayMs, 60_000);
    shrinkalloc::purge();
    let hard = committed() + 24 * MIB;
    // Only a hard line: below it no charge runs reclaim (which would purge
    // the free page first).
    set_soft_limit(None);
    set_hard_limit(Some(hard));

    // Pages A and B, then fill to within 40-56 KiB of the line with 200
    // KiB blocks and 1 KiB ones (carved 16 KiB at a time); the 128 KiB
    // block then no longer fits.
    let small = 9 << 10;
    // Blocks until one lands on another 128 KiB page than the first: that
    // one is alone on B.
    let mut dance: Vec<*mut u8> = Vec::new();
    loop {
        let p = take(small);
        assert!(!p.is_null(), "9 KiB blocks refused 24 MiB under the limit");
        dance.push(p);
        if (p as usize >> 17) != (dance[0] as usize >> 17) {
            break;
        }
        assert!(dance.len() < 1000, "9 KiB blocks never left their first page");
    }
    let filler_size = 200 << 10;
    let mut filler = Vec::new();
    while committed() + filler_size + 100 * 1024 < hard {
        let p = take(filler_size);
        assert!(!p.is_null(), "a filler block refused at {} of {hard}", committed());
        filler.push(p);
    }
    let mut crumbs = Vec::new();
    while committed() + (56 << 10) < hard {
        let p = take(1024);
        assert!(!p.is_null(), "a 1 KiB block refused at {} of {hard}", committed());
        crumbs.push(p);
    }
    // B's block (the last), and one of A's so A is not full: B is then not
    // its class's only page, and a decay tick gives it back.
    give(dance.pop().unwrap(), small);
    give(dance.swap_remove(0), small);
    // Everything free is purged; this thread's heap gives back B (free,
    // committed) at its next slow path.
    thread::spawn(shrinkalloc::purge).join().unwrap();

    let before = committed();
    let big = 128 << 10;
    let p = take(big);
    let after = committed();
    set_hard_limit(None);
    set_soft_limit(None);
    let fitted = !p.is_null();
    if fitted {
        give(p, big);
    }
    for p in filler {
        give(p, filler_size);
    }
    for p in crumbs {
        give(p, 1024);
    }
    for p in dance {
        give(p, small);
    }
    assert!(
        after <= hard,
        "committed went from {before} to {after}, {} bytes past the hard limit {hard} (128 KiB block {})",
        after - hard,
        if fitted { "given" } else { "refused" }
    );
}
