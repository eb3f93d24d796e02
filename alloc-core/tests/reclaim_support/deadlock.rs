//! The scenario of the deadlock tests, run twice: once as the library
//! ships (`reclaim_deadlock.rs`: it must finish), once with the scope mask
//! ignored (`reclaim_deadlock_control.rs`: it must hang), which shows that
//! the first test can see the bug it guards against.
//!
//! Thread T takes lock L (a filesystem lock, say), enters a `NOFS` scope
//! and allocates past the hard limit. An `FS` shrinker needs L to free
//! anything; a `NONE` shrinker and purging can give T some room.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use shrinkalloc::reclaim::{
    nofs, register, CountResult, Needs, ScanResult, ShrinkControl, Shrinker, ShrinkerHandle, ShrinkerOptions,
};

use super::{committed, limit_above_committed, Cache, CacheShrinker, Raw, BLOCK, MIB};

/// Lock L: a flag that never allocates, so that a thread taking it twice
/// hangs for sure (a std mutex may panic instead).
pub static L: AtomicBool = AtomicBool::new(false);
/// Set by the FS shrinker when T itself enters it and is about to take L.
pub static T_ENTERED_FS_SCAN: AtomicBool = AtomicBool::new(false);
/// Worst committed bytes seen by T after an allocation.
pub static T_PEAK: AtomicU64 = AtomicU64::new(0);

fn lock_l() {
    while L.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        thread::sleep(Duration::from_millis(1));
    }
}

fn unlock_l() {
    L.store(false, Ordering::Release);
}

/// The filesystem cache: freeing its blocks needs L.
pub struct FsShrinker(pub Arc<Cache>);

impl Shrinker for FsShrinker {
    fn count(&self, sc: &ShrinkControl) -> CountResult {
        CacheShrinker(self.0.clone()).count(sc)
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        if thread::current().name() == Some("T") {
            T_ENTERED_FS_SCAN.store(true, Ordering::Relaxed);
        }
        lock_l();
        let r = CacheShrinker(self.0.clone()).scan(sc);
        unlock_l();
        r
    }
}

/// What T did, once it finished.
#[derive(Debug)]
pub struct Outcome {
    /// Blocks T got.
    pub got: usize,
    /// Whether an allocation was refused (null) before T stopped.
    pub refused: bool,
}

/// The scenario's state: caches, handles, limit, and T's result channel.
pub struct Scenario {
    pub fs: Arc<Cache>,
    pub plain: Arc<Cache>,
    pub handles: Vec<ShrinkerHandle>,
    pub hard: usize,
    /// Blocks that fitted under the hard limit before T started.
    pub headroom_blocks: usize,
    pub done: mpsc::Receiver<Outcome>,
}

/// Blocks T tries to allocate: far more than fit.
const T_WANTS: usize = 40;

/// Sets a hard limit 48 MiB above what is committed now, fills an FS cache
/// (registered first, so reclaim reaches it first in every round) and a
/// NONE cache, and starts T.
pub fn start() -> Scenario {
    // Soft = hard: no background reclaim before T crosses the limit, so the
    // FS cache is still full when T needs room.
    let hard = limit_above_committed(48 * MIB);
    let fs = Cache::new(Needs::FS);
    let plain = Cache::new(Needs::NONE);
    assert!(fs.fill(10) && plain.fill(8), "the caches fit under the limit");
    let handles = vec![
        register(FsShrinker(fs.clone()), ShrinkerOptions::new("fs-needs-L").needs(Needs::FS).batch(1)),
        register(CacheShrinker(plain.clone()), ShrinkerOptions::new("plain").batch(1)),
    ];
    let headroom_blocks = (hard - committed()) / BLOCK;
    let (tx, done) = mpsc::channel();
    thread::Builder::new()
        .name("T".into())
        .spawn(move || {
            let mut blocks: Vec<Raw> = Vec::with_capacity(T_WANTS);
            lock_l();
            let scope = nofs();
            let mut refused = false;
            for _ in 0..T_WANTS {
                match Raw::try_new(BLOCK) {
                    Some(b) => blocks.push(b),
                    None => {
                        refused = true;
                        break;
                    }
                }
                T_PEAK.fetch_max(committed() as u64, Ordering::Relaxed);
            }
            drop(scope);
            unlock_l();
            let got = blocks.len();
            drop(blocks);
            let _ = tx.send(Outcome { got, refused });
        })
        .unwrap();
    Scenario { fs, plain, handles, hard, headroom_blocks, done }
}
