//! Pages emptied by other threads (`Page::empty_remote`) while their owners
//! allocate, free and sleep: producers allocate batches of blocks of one
//! size (16 B to 32 KiB: small and medium pages), stamp them, keep some
//! and hand the rest to a consumer that checks and frees them, and now and
//! then sleep (so that whole pages wait on their cross-thread lists); a
//! purger calls `shrinkalloc::purge()` without pause, taking and counting
//! those lists. Every block keeps its stamp (`Block::check` on every free),
//! every producer's pages keep their counting identity
//! (`check_thread_heap`), pages were emptied while this ran
//! (`stranded_pages`), and once all is freed and purged the committed count
//! is back where it started.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{Block, How, Rng};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const MIB: usize = 1 << 20;
const PRODUCERS: u64 = 3;
/// Bytes a batch holds about, in 8 to 256 blocks.
const BATCH_BYTES: usize = 512 << 10;

#[test]
fn pages_emptied_while_their_owners_run() {
    let seed = common::seed();
    let run_for = Duration::from_millis(common::env_usize("SHRINKALLOC_TEST_RACE_MS", 1500) as u64);
    shrinkalloc::purge();
    let (start, stranded_before) = (shrinkalloc::stats().committed, shrinkalloc::stats().stranded_pages);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<Vec<Block>>(8);
    let consumer = thread::spawn(move || {
        let mut n = 0usize;
        for batch in rx {
            n += batch.len();
            batch.into_iter().for_each(Block::free);
        }
        n
    });
    let purger = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut rounds = 0usize;
            while !stop.load(Ordering::Relaxed) {
                shrinkalloc::purge();
                rounds += 1;
            }
            rounds
        })
    };
    let end_at = Instant::now() + run_for;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(seed, t);
                let mut kept: Vec<Block> = Vec::new();
                let mut id = t << 48;
                let mut batches = 0usize;
                while Instant::now() < end_at {
                    // One size per batch, so that a batch fills pages of
                    // one class that the consumer then empties whole.
                    let size = rng.range(16, 32 << 10);
                    let n = (BATCH_BYTES / size).clamp(8, 256);
                    let mut batch = Vec::with_capacity(n);
                    for _ in 0..n {
                        id += 1;
                        batch.push(Block::new(size, 8, How::Malloc, false, id));
                    }
                    // A few stay with their owner, freed here later.
                    for _ in 0..rng.below(4) {
                        kept.push(batch.pop().unwrap());
                    }
                    tx.send(batch).unwrap();
                    if kept.len() > 64 {
                        for b in kept.drain(..32) {
                            b.free();
                        }
                    }
                    batches += 1;
                    if batches % 8 == 0 {
                        shrinkalloc::check::check_thread_heap().expect("a producer's pages");
                    }
                    if rng.one_in(4) {
                        // Asleep while the consumer frees and the purger looks.
                        thread::sleep(Duration::from_millis(rng.range(1, 3) as u64));
                    }
                }
                kept.into_iter().for_each(Block::free);
                shrinkalloc::check::check_thread_heap().expect("a producer's pages at the end");
                batches
            })
        })
        .collect();
    drop(tx);
    let batches: usize = producers.into_iter().map(|p| p.join().unwrap()).sum();
    let freed_by_consumer = consumer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let rounds = purger.join().unwrap();
    shrinkalloc::purge();
    let s = shrinkalloc::stats();
    let emptied = s.stranded_pages - stranded_before;
    eprintln!(
        "{batches} batches, {freed_by_consumer} blocks freed by the consumer, {rounds} purges, {emptied} pages emptied; \
         committed {} -> {} KiB",
        start >> 10,
        s.committed >> 10
    );
    assert!(batches > 0 && freed_by_consumer > 0 && rounds > 0, "nothing ran");
    assert!(emptied > 0, "no page was emptied by another thread: the race was not run");
    assert!(s.committed <= start + 4 * MIB, "committed grew by {} KiB", (s.committed - start) >> 10);
    assert!(s.committed + 4 * MIB >= start, "committed shrank by {} KiB", (start - s.committed) >> 10);
}
