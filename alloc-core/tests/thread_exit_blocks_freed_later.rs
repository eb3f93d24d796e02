//! Blocks outlive the thread that allocated them: after it exits another
//! thread reads and frees them, and the exited thread's pages are taken over
//! by new threads without handing out a block that is still live, and without
//! the memory in use growing from one generation of threads to the next.

mod common;

use std::sync::{mpsc, Mutex};
use std::thread;

use common::{random_align, random_size, Block, How, Rng, MIB};
use shrinkalloc::Stats;

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const ROUNDS: usize = 40;
const THREADS: usize = 4;
const BLOCKS_PER_THREAD: usize = 3_000;
const MAX_SIZE: usize = 3 * MIB;

/// The round from which the memory held should stay level.
const SETTLED: usize = 4;

/// Serializes the tests of this file, so that one's blocks do not count in
/// the other's `in_use`.
static SERIAL: Mutex<()> = Mutex::new(());

/// One exiting thread's work: allocates blocks of many sizes, frees a third
/// of them itself (so its pages have local free lists when it exits), and
/// hands the rest back.
fn generation_thread(seed: u64, stream: u64) -> (Vec<Block>, usize) {
    let mut rng = Rng::new(seed, stream);
    let mut kept = Vec::with_capacity(BLOCKS_PER_THREAD);
    let mut bytes = 0;
    for n in 0..BLOCKS_PER_THREAD {
        let size = random_size(&mut rng, MAX_SIZE);
        let how = if rng.one_in(4) { How::Aligned } else { How::Global };
        let b = Block::new(size, random_align(&mut rng), how, false, rng.next_u64());
        bytes += size;
        if n % 3 == 0 {
            b.free();
        } else {
            kept.push(b);
        }
    }
    (kept, bytes)
}

/// Runs one generation of threads to completion (they have exited when this
/// returns) and returns what they left behind, and the bytes they asked for.
fn run_generation(seed: u64, round: usize) -> (Vec<Block>, usize) {
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let stream = (round * THREADS + t) as u64;
            thread::spawn(move || generation_thread(seed, stream))
        })
        .collect();
    let mut blocks = Vec::new();
    let mut bytes = 0;
    for h in handles {
        let (kept, asked) = h.join().unwrap();
        blocks.extend(kept);
        bytes += asked;
    }
    (blocks, bytes)
}

/// From round [`SETTLED`] on each round holds about the same blocks, so
/// what abandoned heaps leak piles up round after round: panics if a figure
/// grew by more than `slack` since then. Checked every round, so that a leak
/// fails before it exhausts the machine.
fn assert_bounded(history: &[Stats], slack: usize) {
    use shrinkalloc::options::{get, Opt};
    type Figure = fn(&Stats) -> usize;
    // Address space may also sit in the caches of empty segments and freed
    // huge blocks (and a realloc-grown block's reserve), which fill and
    // drain with timing; a leak outgrows them within the rounds. The huge
    // cache's budget grows up to four times with the threads allocating at
    // once; segments past the segment cache's size stay for a purge delay.
    let caches = 4 * get(Opt::HugeCacheBytes) + 3 * get(Opt::SegmentCache) * (4 << 20);
    let figures: [(&str, Figure, usize); 3] =
        [("in_use", |s| s.in_use, 0), ("committed", |s| s.committed, 0), ("mapped", |s| s.mapped, caches)];
    let (Some(settled), Some(now)) = (history.get(SETTLED), history.last()) else {
        return;
    };
    for (name, figure, extra) in figures {
        let per_round: Vec<usize> = history.iter().map(|s| figure(s) >> 20).collect();
        assert!(
            figure(now) <= figure(settled) + slack + extra,
            "{name} grows with thread generations: {} at round {}, {} at round {} (a round \
             allocates at most {slack} / 2); per round (MiB): {per_round:?}",
            figure(settled),
            SETTLED + 1,
            figure(now),
            history.len()
        );
    }
}

#[test]
fn thread_exit_blocks_freed_later() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = common::seed();
    // Blocks of the previous generation stay live while the next one adopts
    // its pages; a page handed out twice shows up as a broken stamp here.
    let mut held: Vec<Block> = Vec::new();
    let mut history = Vec::with_capacity(ROUNDS);
    let mut max_bytes_per_round = 0;
    for round in 0..ROUNDS {
        let (blocks, bytes) = run_generation(seed, round);
        max_bytes_per_round = max_bytes_per_round.max(bytes);
        for b in held.drain(..) {
            b.free();
        }
        for (n, b) in blocks.into_iter().enumerate() {
            if n % 2 == 0 {
                b.free();
            } else {
                held.push(b);
            }
        }
        history.push(shrinkalloc::stats());
        assert_bounded(&history, 2 * max_bytes_per_round);
    }
    for b in held.drain(..) {
        b.free();
    }
    eprintln!("after round {SETTLED}: {}\nat the end: {}", history[SETTLED], shrinkalloc::stats());
}

/// The owner exits while another thread is still freeing its blocks, so
/// cross-thread frees race with the owner's heap being abandoned.
#[test]
fn blocks_freed_while_owner_exits() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = common::seed();
    for round in 0..50 {
        let (tx, rx) = mpsc::sync_channel::<Block>(64);
        let freer = thread::spawn(move || {
            for b in rx {
                b.free();
            }
        });
        let owner = thread::spawn(move || {
            let mut rng = Rng::new(seed, 1_000 + round);
            for _ in 0..2_000 {
                let size = random_size(&mut rng, 256 * 1024);
                let b = Block::new(size, 16, How::Global, false, rng.next_u64());
                if rng.one_in(2) {
                    tx.send(b).unwrap();
                } else {
                    b.free();
                }
            }
            // Sender dropped here: the freer finishes after the owner exits.
        });
        owner.join().unwrap();
        freer.join().unwrap();
    }
    let survivors: Vec<Block> = {
        let mut rng = Rng::new(seed, 99);
        (0..10_000)
            .map(|_| {
                let size = random_size(&mut rng, 256 * 1024);
                Block::new(size, 8, How::Global, false, rng.next_u64())
            })
            .collect()
    };
    for b in survivors {
        b.free();
    }
}

/// Memory an exited thread allocated, once another thread has freed it, goes
/// back to the OS on `purge()`, without waiting for a new thread to adopt
/// the exited thread's heap.
#[test]
fn exited_threads_memory_is_purged_after_free() {
    const TOTAL: usize = 100 * MIB;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = common::seed();
    shrinkalloc::purge();
    let rss_before = common::rss_bytes();
    let blocks = thread::spawn(move || {
        let mut rng = Rng::new(seed, 5_000);
        let mut blocks = Vec::new();
        let mut bytes = 0;
        while bytes < TOTAL {
            let size = rng.range(16, 128 * 1024);
            let b = Block::new(size, 16, How::Global, false, rng.next_u64());
            // SAFETY: `b` is a live block of `b.size` bytes that we own.
            unsafe { common::fill_pages(b.ptr, b.size, b.id) };
            bytes += size;
            blocks.push(b);
        }
        blocks
    })
    .join()
    .unwrap();
    // The thread of the previous test may still have been exiting at our
    // `purge()`, so its pages (resident) may have been reused here: the
    // resident set need not have grown by all of TOTAL. What matters is the
    // drop below.
    let (rss_full, full) = (common::rss_bytes(), shrinkalloc::stats());
    for b in blocks {
        b.free();
    }
    let released = shrinkalloc::purge();
    let (rss, after) = (common::rss_bytes(), shrinkalloc::stats());
    eprintln!(
        "resident {rss_before} -> {rss_full} -> {rss}, purge() released {released}\nfull:  {full}\nafter: {after}"
    );
    assert!(
        rss + TOTAL / 4 * 3 <= rss_full,
        "the exited thread's memory, all freed, stays resident after purge(): {rss_full} -> {rss}; {after}"
    );
    assert!(
        after.committed + TOTAL / 4 * 3 <= full.committed,
        "committed only went from {} to {}",
        full.committed,
        after.committed
    );
}
