//! Randomized allocation, reallocation and free from several threads, with
//! blocks handed between threads, never corrupts or overlaps a live block.
//!
//! Each worker keeps a table of live blocks and, per operation, allocates into
//! an empty slot or frees, resizes, checks, or swaps a block with a slot of a
//! table shared by all workers (so that blocks are resized and freed by
//! threads that did not allocate them). Every block carries a stamp naming it
//! (`common`), checked before each free and realloc; every returned pointer is
//! checked for alignment, `usable_size` and `is_ours`. Now and then a worker
//! calls `purge()` or `stats()` while the others run.
//!
//! `SHRINKALLOC_TEST_SEED` picks the seed (printed at start), and
//! `SHRINKALLOC_TEST_OPS` the number of operations over all threads (default
//! 10 million in release builds, 1 million in debug builds). Each worker's
//! sequence of choices is a function of the seed; their interleaving is not.

mod common;

use std::sync::Mutex;
use std::time::Instant;

use common::{random_align, random_size, Block, How, Rng, MIB};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const THREADS: usize = 4;
const LOCAL_SLOTS: usize = 1024;
const SHARED_SLOTS: usize = 256;
const MAX_SIZE: usize = 8 * MIB;

/// A fresh block of random size, alignment and allocation path.
fn random_block(rng: &mut Rng) -> Block {
    let how = match rng.below(8) {
        0 => How::Malloc,
        1 => How::Aligned,
        _ => How::Global,
    };
    let zeroed = rng.one_in(20);
    let size = match how {
        How::Global => random_size(rng, MAX_SIZE),
        How::Malloc | How::Aligned if rng.one_in(200) => 0,
        How::Malloc | How::Aligned => random_size(rng, MAX_SIZE),
    };
    let align = random_align(rng);
    Block::new(size, align, how, zeroed, rng.next_u64())
}

/// A new size for `old`: sometimes anything, else a grow, a shrink, or a
/// nudge that likely stays in the same size class.
fn resized(rng: &mut Rng, old: usize) -> usize {
    let new = match rng.below(4) {
        0 => random_size(rng, MAX_SIZE),
        1 => old + rng.range(1, old.max(16)),
        2 => old / rng.range(1, 4),
        _ => (old + rng.range(0, 32)).saturating_sub(16),
    };
    new.clamp(1, MAX_SIZE)
}

fn worker(t: usize, seed: u64, ops: usize, shared: &[Mutex<Option<Block>>]) {
    let mut rng = Rng::new(seed, t as u64 + 1);
    let mut local: Vec<Option<Block>> = (0..LOCAL_SLOTS).map(|_| None).collect();
    for _ in 0..ops {
        let i = rng.below(LOCAL_SLOTS);
        local[i] = match local[i].take() {
            None => Some(random_block(&mut rng)),
            Some(b) => match rng.below(100) {
                0..=44 => {
                    b.free();
                    None
                }
                45..=64 => {
                    let new_size = resized(&mut rng, b.size);
                    Some(b.realloc(new_size))
                }
                65..=89 => {
                    let j = rng.below(SHARED_SLOTS);
                    shared[j].lock().unwrap().replace(b)
                }
                _ => {
                    b.check("periodic check");
                    Some(b)
                }
            },
        };
        if rng.one_in(250_000) {
            shrinkalloc::purge();
        }
        if rng.one_in(100_000) {
            // Walks every segment while the other workers allocate; the
            // figures are approximate then, so only their reading is tested.
            let _ = shrinkalloc::stats().to_string();
        }
    }
    for b in local.into_iter().flatten() {
        b.free();
    }
}

#[test]
fn random_ops_multithreaded() {
    let seed = common::seed();
    let default_ops = if cfg!(debug_assertions) { 1_000_000 } else { 10_000_000 };
    let ops = common::env_usize("SHRINKALLOC_TEST_OPS", default_ops);
    eprintln!("{ops} operations on {THREADS} threads");
    let start = Instant::now();
    let shared: Vec<Mutex<Option<Block>>> = (0..SHARED_SLOTS).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let shared = &shared;
            std::thread::Builder::new()
                .name(format!("worker-{t}"))
                .spawn_scoped(s, move || worker(t, seed, ops / THREADS, shared))
                .unwrap();
        }
    });
    for slot in shared {
        if let Some(b) = slot.into_inner().unwrap() {
            b.free();
        }
    }
    eprintln!("done in {:.1?}; {}", start.elapsed(), shrinkalloc::stats());
}
