//! `churn`: random allocation, free and realloc from several threads, with
//! blocks moved between threads, every block checked, near the limit.
//!
//! Each thread owns a table of slots and keeps its live bytes near its share
//! of [`LIVE_PERCENT`] of the limit; each step picks a slot and allocates,
//! frees, resizes (grow or shrink, through `realloc`), checks, or swaps the
//! block with one of a shared table of transfer slots, so that blocks are
//! freed and resized by threads other than their allocator's. Sizes are
//! mostly small, some medium, a few up to 2 MiB (shrinkalloc's huge blocks).
//!
//! Invariant: every block carries its tag and is stamped with it over its
//! whole length; it is checked before every free, resize and hand-over, its
//! prefix after every resize, and all blocks at the end.
//!
//! Status fields: `live_bytes`, `allocs`, `frees`, `reallocs`, `transfers`,
//! `checks`; the final line adds `verified` (blocks checked at the end).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use super::{corrupt, ChildConfig, Expect, Launch, Run, Scenario};
use crate::allocator::SHRINKALLOC_AND_PEERS;
use crate::verify::{self, Rng};

/// The `churn` scenario.
pub static SCENARIO: Scenario = Scenario {
    name: "churn",
    about: "random alloc/free/realloc from several threads, blocks moved across threads, \
            every block checked, live set at half the limit",
    launch: Launch::InProcess(main),
    default_allocators: &SHRINKALLOC_AND_PEERS,
    default_duration: Duration::from_secs(10),
    expect: |_| Expect::Survives,
    traced: false,
};

/// The live set the threads aim at, as a share of the limit.
pub const LIVE_PERCENT: usize = 50;
const SLOTS: usize = 8192;
const TRANSFER_SLOTS: usize = 256;

/// A stamped block.
struct Block {
    data: Vec<u8>,
    tag: u64,
}

impl Block {
    fn new(rng: &mut Rng) -> Block {
        let tag = rng.next_u64();
        let mut data = vec![0u8; size(rng)];
        verify::stamp(&mut data, tag);
        Block { data, tag }
    }

    fn check(&self, when: &str) {
        if let Err(m) = verify::check(&self.data, self.tag) {
            corrupt(format_args!("{when}: {m}"));
        }
    }

    /// Resizes through `realloc`; the kept prefix must survive it.
    fn resize(&mut self, new_len: usize) {
        self.check("before realloc");
        let kept = self.data.len().min(new_len);
        if new_len > self.data.len() {
            self.data.reserve_exact(new_len - self.data.len());
            self.data.resize(new_len, 0);
        } else {
            self.data.truncate(new_len);
            self.data.shrink_to_fit();
        }
        if let Err(m) = verify::check(&self.data[..kept], self.tag) {
            corrupt(format_args!("prefix after realloc to {new_len}: {m}"));
        }
        verify::stamp(&mut self.data, self.tag);
    }
}

/// Block sizes: 70% up to 256 B, 25% up to 8 KiB, 4.5% up to 128 KiB,
/// 0.5% up to 2 MiB.
fn size(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0..=699 => rng.range(1, 256),
        700..=949 => rng.range(257, 8 << 10),
        950..=994 => rng.range((8 << 10) + 1, 128 << 10),
        _ => rng.range((128 << 10) + 1, 2 << 20),
    }
}

#[derive(Default)]
struct Counters {
    live: AtomicI64,
    allocs: AtomicU64,
    frees: AtomicU64,
    reallocs: AtomicU64,
    transfers: AtomicU64,
    checks: AtomicU64,
}

fn main(cfg: &ChildConfig) -> i32 {
    let shared: Vec<Mutex<Option<Block>>> = (0..TRANSFER_SLOTS).map(|_| Mutex::new(None)).collect();
    let counters = Counters::default();
    let run = Run::new(cfg);
    let budget = (cfg.limit / 100 * LIVE_PERCENT / cfg.threads) as i64;
    let fields = || {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("live_bytes", counters.live.load(Ordering::Relaxed).max(0) as u64),
            ("allocs", get(&counters.allocs)),
            ("frees", get(&counters.frees)),
            ("reallocs", get(&counters.reallocs)),
            ("transfers", get(&counters.transfers)),
            ("checks", get(&counters.checks)),
        ]
    };
    let verified = AtomicU64::new(0);
    run.supervise(&fields, || {
        thread::scope(|s| {
            for t in 0..cfg.threads {
                let (shared, counters, run, verified) = (&shared, &counters, &run, &verified);
                s.spawn(move || {
                    let mut w = Worker { rng: Rng::new(cfg.seed, t as u64), live: 0, budget, counters };
                    let n = w.churn(run, shared);
                    verified.fetch_add(n, Ordering::Relaxed);
                });
            }
        });
    });
    for slot in &shared {
        if let Some(b) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
            b.check("transfer slot at the end");
            verified.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut last = fields();
    last.push(("verified", verified.load(Ordering::Relaxed)));
    run.print(true, &|| last.clone());
    0
}

struct Worker<'a> {
    rng: Rng,
    /// Bytes this thread's slots hold.
    live: i64,
    budget: i64,
    counters: &'a Counters,
}

impl Worker<'_> {
    /// Churns until the run stops, then checks and frees what it holds;
    /// returns the blocks checked at the end.
    fn churn(&mut self, run: &Run, shared: &[Mutex<Option<Block>>]) -> u64 {
        let mut slots: Vec<Option<Block>> = (0..SLOTS).map(|_| None).collect();
        let mut ops = 0u64;
        while !run.done() {
            let i = self.rng.below(SLOTS as u64) as usize;
            self.step(&mut slots[i], shared);
            ops += 1;
            if ops % 256 == 0 {
                run.count(256);
            }
        }
        let blocks = slots.into_iter().flatten();
        blocks.map(|b| b.check("at the end")).count() as u64
    }

    fn step(&mut self, slot: &mut Option<Block>, shared: &[Mutex<Option<Block>>]) {
        let c = self.counters;
        let Some(block) = slot else {
            if self.live < self.budget {
                let b = Block::new(&mut self.rng);
                self.account(b.data.len() as i64);
                *slot = Some(b);
                c.allocs.fetch_add(1, Ordering::Relaxed);
            }
            return;
        };
        let over = self.live > self.budget;
        match self.rng.below(100) {
            _ if over => self.free(slot),
            0..=34 => self.free(slot),
            35..=59 => {
                let (old, new) = (block.data.len(), size(&mut self.rng));
                block.resize(new);
                self.account(new as i64 - old as i64);
                c.reallocs.fetch_add(1, Ordering::Relaxed);
            }
            60..=74 => self.transfer(slot, shared),
            _ => {
                block.check("on read");
                c.checks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn free(&mut self, slot: &mut Option<Block>) {
        if let Some(b) = slot.take() {
            b.check("before free");
            self.account(-(b.data.len() as i64));
            self.counters.frees.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Swaps the slot's block with a random transfer slot's: blocks end up
    /// freed and resized by threads that did not allocate them.
    fn transfer(&mut self, slot: &mut Option<Block>, shared: &[Mutex<Option<Block>>]) {
        if let Some(b) = slot {
            b.check("before hand-over");
        }
        let j = self.rng.below(shared.len() as u64) as usize;
        let given = slot.as_ref().map_or(0, |b| b.data.len() as i64);
        std::mem::swap(slot, &mut shared[j].lock().unwrap_or_else(PoisonError::into_inner));
        let got = slot.as_ref().map_or(0, |b| b.data.len() as i64);
        if let Some(b) = slot {
            b.check("after hand-over");
        }
        self.account(got - given);
        self.counters.transfers.fetch_add(1, Ordering::Relaxed);
    }

    fn account(&mut self, delta: i64) {
        self.live += delta;
        // Relaxed: a statistic.
        self.counters.live.fetch_add(delta, Ordering::Relaxed);
    }
}
