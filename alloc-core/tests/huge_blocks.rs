//! Huge blocks (above the largest size class, 2 MiB to 64 MiB here) keep
//! their content through `realloc` up and down (also across the boundary
//! to the size classes), keep their alignment, can be freed by another
//! thread, and give their memory back when freed.
//!
//! Besides [`Block`]'s own stamp, every 4 KiB of each huge block carries a
//! stamp word, so that a page lost or misplaced by a resize is seen.

mod common;

use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;

use common::{page_mismatch, rss_bytes, Block, How, Rng, MIB};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// Serializes the tests of this file, whose memory measures would see each
/// other's blocks.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A huge block with every page stamped.
fn huge(size: usize, align: usize, how: How, id: u64) -> Block {
    let b = Block::new(size, align, how, false, id);
    // SAFETY: `b` is a live block of `b.size` bytes that we own.
    unsafe { common::fill_pages(b.ptr, b.size, b.id) };
    b
}

fn check_pages(b: &Block, upto: usize, what: &str) {
    // SAFETY: `b` is a live block of `b.size` bytes.
    if let Some(o) = unsafe { page_mismatch(b.ptr, b.size, upto, b.id) } {
        panic!("{what}: page stamp lost at offset {o:#x} of {b:?}");
    }
}

/// Resizes, checking every page of the kept prefix, and restamps the pages.
fn resize(b: Block, new_size: usize) -> Block {
    check_pages(&b, usize::MAX, "before realloc");
    let old_size = b.size;
    let b = b.realloc(new_size);
    check_pages(&Block { size: old_size, ..b }, new_size, "after realloc");
    // SAFETY: `b` is a live block of `b.size` bytes that we own.
    unsafe { common::fill_pages(b.ptr, b.size, b.id) };
    b
}

fn free_checked(b: Block) {
    check_pages(&b, usize::MAX, "before free");
    b.free();
}

#[test]
fn huge_realloc_grow_shrink_keeps_content() {
    let _serial = serial();
    let path = [
        3 * MIB,
        17 * MIB + 4_321,
        64 * MIB,
        33 * MIB,
        5 * MIB + 1,
        2 * MIB,
        MIB,
        100_000,
        100,
        2 * MIB + 1,
        40 * MIB,
        2 * MIB + 4096,
    ];
    let mut id = 1;
    for align in [8, 4096, 2 * MIB, 64 * MIB] {
        for how in [How::Global, How::Aligned] {
            id += 1;
            let mut b = huge(2 * MIB, align, how, id);
            for &size in &path {
                b = resize(b, size);
            }
            free_checked(b);
        }
    }
}

#[test]
fn huge_blocks_freed_by_another_thread() {
    let _serial = serial();
    let mut rng = Rng::new(common::seed(), 1);
    // Allocated here, freed there.
    let (tx, rx) = mpsc::sync_channel::<Block>(2);
    let freer = thread::spawn(move || rx.into_iter().for_each(free_checked));
    for n in 0..24 {
        let size = rng.range(2 * MIB, 64 * MIB);
        let align = if n % 3 == 0 { 2 * MIB } else { 16 };
        tx.send(huge(size, align, How::Global, rng.next_u64())).unwrap();
    }
    drop(tx);
    freer.join().unwrap();
    // Allocated and resized there, freed here after that thread exited.
    let seed = common::seed();
    let made = thread::spawn(move || {
        let mut rng = Rng::new(seed, 2);
        (0..16)
            .map(|_| {
                let b = huge(rng.range(2 * MIB, 32 * MIB), 64, How::Aligned, rng.next_u64());
                let new_size = rng.range(2 * MIB, 48 * MIB);
                resize(b, new_size)
            })
            .collect::<Vec<Block>>()
    });
    for b in made.join().unwrap() {
        free_checked(b);
    }
    // A ring of threads, each resizing what the previous one sent it.
    let threads = 4;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads).map(|_| mpsc::channel::<Block>()).unzip();
    let handles: Vec<_> = rxs
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let next = txs[(t + 1) % threads].clone();
            thread::spawn(move || {
                let mut rng = Rng::new(seed, 10 + t as u64);
                for i in 0..20 {
                    let b = huge(rng.range(2 * MIB, 16 * MIB), 4096, How::Global, rng.next_u64());
                    next.send(b).unwrap();
                    let got = rx.recv().unwrap();
                    let new_size = rng.range(MIB, 24 * MIB);
                    let got = resize(got, new_size);
                    // The same choice on every thread, so that each receives
                    // as many blocks as its neighbour sends.
                    if i % 2 == 0 {
                        free_checked(got);
                    } else {
                        next.send(got).unwrap();
                        free_checked(rx.recv().unwrap());
                    }
                }
            })
        })
        .collect();
    drop(txs);
    for h in handles {
        h.join().unwrap();
    }
}

/// Freed huge blocks leave the resident set and the mapped address space:
/// repeated cycles do not accumulate mappings.
#[test]
fn huge_blocks_release_their_memory() {
    let _serial = serial();
    let mut rng = Rng::new(common::seed(), 3);
    shrinkalloc::purge();
    let mut mapped_after = Vec::new();
    for cycle in 0..10 {
        let rss_before = rss_bytes();
        let blocks: Vec<Block> =
            (0..4).map(|_| huge(rng.range(16 * MIB, 64 * MIB), 16, How::Global, rng.next_u64())).collect();
        let total: usize = blocks.iter().map(|b| b.size).sum();
        let rss_full = rss_bytes();
        for b in blocks {
            free_checked(b);
        }
        shrinkalloc::purge();
        let rss_after = rss_bytes();
        let stats = shrinkalloc::stats();
        mapped_after.push(stats.mapped);
        assert!(
            rss_after + total / 2 <= rss_full,
            "cycle {cycle}: resident {rss_before} -> {rss_full} -> {rss_after} after freeing \
             {total} bytes of huge blocks; {stats}"
        );
        assert!(stats.mapped <= mapped_after[0] + 256 * MIB, "cycle {cycle}: mapped grows: {mapped_after:?}; {stats}");
    }
}
