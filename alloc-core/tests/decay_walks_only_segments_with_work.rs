//! The decay tick walks only the segments where a page became free or was
//! queued for its owner since a walk last found nothing left there (see
//! `purge_pass`): with the purge delay of 50 ms it runs up to 80 times a
//! second, and walking every page record of a big heap each time cost a
//! process with 8 GiB of small blocks live as much time as `malloc` itself.
//!
//! Here: with 64 MiB of small blocks live and ticks passing, no segment
//! waits for a look. Then all the blocks are freed but one in each
//! segment, so that the segments stay in use and only the tick's walk can
//! give their free pages back: it still does after the delay, and then the
//! flags are gone again.

use std::time::{Duration, Instant};

use shrinkalloc::check::segments_to_look_at;
use shrinkalloc::raw;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const MIB: usize = 1 << 20;
/// Blocks live: 64 MiB of 64-byte blocks, 16 small segments.
const LIVE: usize = 64 * MIB / 64;
/// Segments that other threads of the test process (libtest's) may leave
/// flagged meanwhile.
const NOISE: usize = 3;

/// Keeps allocation slow paths coming (each carving of 32-byte blocks is
/// one, and every 16th runs the decay tick) for `how_long`, freeing
/// nothing: about 64 KiB each 10 ms, into `keep`.
fn tick_for(how_long: Duration, keep: &mut Vec<*mut u8>) {
    let start = Instant::now();
    while start.elapsed() < how_long {
        for _ in 0..2048 {
            let p = raw::malloc(32);
            assert!(!p.is_null());
            keep.push(p);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn free_all(blocks: &mut Vec<*mut u8>) {
    for p in blocks.drain(..) {
        // SAFETY: a live block from `raw::malloc`, freed once.
        unsafe { raw::free(p) };
    }
}

#[test]
fn the_decay_tick_walks_only_segments_with_work() {
    // Room reserved up front: growing these would free their old buffers.
    let mut live: Vec<*mut u8> = Vec::with_capacity(LIVE);
    let mut driver: Vec<*mut u8> = Vec::with_capacity(1 << 20);
    for _ in 0..LIVE {
        let p = raw::malloc(64);
        assert!(!p.is_null());
        live.push(p);
    }
    tick_for(Duration::from_millis(300), &mut driver);
    let busy = segments_to_look_at();
    let committed_live = shrinkalloc::stats().committed;
    eprintln!("64 MiB live: {busy} segments to look at, committed {} KiB", committed_live >> 10);
    assert!(busy <= NOISE, "{busy} segments flagged while every page holds live blocks");

    // One block kept in each segment (4 MiB, aligned): the lowest.
    let mut kept: Vec<*mut u8> = Vec::with_capacity(64);
    live.sort_unstable();
    live.retain(|&p| {
        let first = kept.last().is_none_or(|&k| k as usize >> 22 != p as usize >> 22);
        if first {
            kept.push(p);
        }
        !first
    });
    free_all(&mut live);
    let freed = segments_to_look_at();
    // Ten purge delays and more: the tick purges the free pages, then finds
    // nothing left to wait for.
    tick_for(Duration::from_millis(600), &mut driver);
    let (after, committed_after) = (segments_to_look_at(), shrinkalloc::stats().committed);
    eprintln!(
        "freed all but {} blocks: {freed} segments to look at; after 600 ms of ticks: {after}, committed {} KiB",
        kept.len(),
        committed_after >> 10
    );
    assert!(
        committed_after + 48 * MIB <= committed_live,
        "the ticks gave back {} KiB of the 64 MiB freed",
        committed_live.saturating_sub(committed_after) >> 10
    );
    assert!(after <= NOISE, "{after} segments still flagged after their pages went back");
    free_all(&mut driver);
    free_all(&mut kept);
}
