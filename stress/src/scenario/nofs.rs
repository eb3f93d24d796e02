//! `nofs`: the deadlock this project exists for, under cgroup pressure.
//!
//! A toy filesystem daemon keeps an inode cache behind its filesystem lock
//! and a block cache (the `cache` scenario's) behind per-shard locks. The
//! inode cache's shrinker is what a filesystem's is: it declares
//! [`Needs::FS`] and *blocks* on the filesystem lock. Writer threads take
//! that lock inside a `NOFS` scope and allocate new inodes while holding it
//! (fallibly, as kernel code under `GFP_NOFS` does, backing off on refusal);
//! reader threads fill the block cache outside the lock and look inodes up
//! under it, also in `NOFS` scope. Both caches grow, paced, to
//! [`GROWTH`] times the limit over the run. A few
//! times a second each writer also commits a journal: a buffer of a third
//! of the limit (every other one larger if that is what it takes to push
//! shrinkalloc past its hard limit), allocated, written and freed under the
//! lock, so that reclaim runs *in* the `NOFS` thread that holds it (and a
//! refused journal is counted, not fatal).
//!
//! If reclaim ever called the FS shrinker from a writer holding the lock,
//! the writer would wait on itself: the child hangs and its watchdog ends it
//! with [`EXIT_HANG`](super::EXIT_HANG). Expected under shrinkalloc: it
//! completes; the FS shrinker is called only by threads allowed to
//! (`fs_scans_in_nofs` stays 0) and still frees inodes.
//!
//! Status fields: `inodes`, `blocks`, `journals`, `refused` (writer
//! allocations refused at the hard limit, journals included), `fs_freed`,
//! `fs_skipped` (times reclaim in a NOFS thread skipped the FS shrinker: the
//! dangerous path was taken), `fs_scans_in_nofs` (must be 0),
//! `block_evicted`; the final line adds `verified`.
//!
//! The filesystem lock is a `shrinkalloc::sync::Mutex`, so that reclaim
//! lockdep (`SHRINKALLOC_LOCKDEP`) sees it: with the checker on, the run
//! first teaches it that the inode shrinker takes the lock (one inode, one
//! pass), and must then see no report. `SHRINKALLOC_STRESS_NOFS_DROP_SCOPE=1`
//! drops the readers' `NOFS` scope around their lookups under the lock:
//! the bug lockdep must report (`stress/tests/lockdep_*`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread;
use std::time::Duration;

use shrinkalloc::reclaim::{
    self, CountResult, Level, Needs, ScanResult, ScopeFlags, ShrinkControl, Shrinker, ShrinkerHandle, ShrinkerOptions,
};
use shrinkalloc::sync::{Mutex, MutexGuard};

use super::cache::{Cache, GROWTH};
use super::{corrupt, due, ChildConfig, Expect, Launch, Run, Scenario};
use crate::allocator::Allocator;
use crate::verify::{self, mix, Rng};

/// The `nofs` scenario.
pub static SCENARIO: Scenario = Scenario {
    name: "nofs",
    about: "a filesystem daemon allocating under its FS lock in NOFS scopes, with an FS shrinker \
            that needs that lock, under memory pressure",
    launch: Launch::InProcess(main),
    default_allocators: &[Allocator::ShrinkAlloc],
    default_duration: Duration::from_secs(10),
    expect: |a| if a.registers_shrinkers() { Expect::Survives } else { Expect::DiesAtLimit },
    traced: false,
};

const MIN_INODE: usize = 256;
const MAX_INODE: usize = 4096;
/// Inodes a writer creates per hold of the filesystem lock.
const PER_HOLD: usize = 8;
/// Journal commits per second per writer.
const JOURNALS_PER_SEC: f64 = 3.0;
/// A journal buffer is the limit divided by this.
const JOURNAL_DIVISOR: usize = 3;

/// What the filesystem lock protects.
struct Inodes {
    map: HashMap<u64, Box<[u8]>>,
    fifo: VecDeque<u64>,
}

/// The toy filesystem.
struct Fs {
    /// The filesystem lock.
    lock: Mutex<Inodes>,
    seed: u64,
    next_inode: AtomicU64,
    inodes: AtomicUsize,
    refused: AtomicU64,
    journals: AtomicU64,
    /// FS shrinker calls made from a `NOFS` thread: must stay 0.
    scans_in_nofs: AtomicU64,
    /// Whether shrinkalloc serves the process (journals then cross its
    /// hard limit for sure).
    shrinkalloc: bool,
    /// Readers look inodes up without their `NOFS` scope (a planted bug).
    drop_scope: bool,
}

impl Fs {
    fn lock(&self) -> MutexGuard<'_, Inodes> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self, ino: u64) -> usize {
        MIN_INODE + (mix(self.seed ^ ino ^ 0x1f0d) % (MAX_INODE - MIN_INODE + 1) as u64) as usize
    }

    fn tag(&self, ino: u64) -> u64 {
        mix(self.seed.rotate_left(29) ^ ino)
    }

    /// Creates up to [`PER_HOLD`] inodes under the filesystem lock, in a
    /// `NOFS` scope, allocating fallibly; returns how many.
    fn create_inodes(&self, want: usize) -> usize {
        let _nofs = reclaim::nofs();
        let mut fs = self.lock();
        for made in 0..want {
            // Relaxed: inode numbers only need to be unique.
            let ino = self.next_inode.fetch_add(1, Ordering::Relaxed);
            let Some(value) = self.new_inode(ino) else { return self.refuse(made) };
            if fs.map.try_reserve(1).is_err() || fs.fifo.try_reserve(1).is_err() {
                return self.refuse(made);
            }
            fs.map.insert(ino, value);
            fs.fifo.push_back(ino);
            self.inodes.fetch_add(1, Ordering::Relaxed);
        }
        want
    }

    fn new_inode(&self, ino: u64) -> Option<Box<[u8]>> {
        let len = self.len(ino);
        let mut v = Vec::new();
        v.try_reserve_exact(len).ok()?;
        v.resize(len, 0);
        verify::stamp(&mut v, self.tag(ino));
        Some(v.into_boxed_slice())
    }

    /// Writes a journal of at least `len` bytes under the filesystem lock,
    /// in a `NOFS` scope, and frees it; a refused allocation is counted.
    fn commit_journal(&self, len: usize, n: u64) {
        let _nofs = reclaim::nofs();
        let _fs = self.lock();
        // Every other journal is sized to cross the hard limit for sure.
        let len = if self.shrinkalloc && n % 2 == 1 { len.max(past_the_hard_limit(len / 32)) } else { len };
        let mut journal: Vec<u8> = Vec::new();
        if journal.try_reserve_exact(len).is_err() {
            self.refuse(0);
            return;
        }
        journal.resize(len, 0);
        let tag = mix(self.seed ^ n ^ 0x10_0a1);
        verify::stamp_sparse(&mut journal, tag);
        if let Err(m) = verify::check_sparse(&journal, tag) {
            corrupt(format_args!("journal {n}: {m}"));
        }
        self.journals.fetch_add(1, Ordering::Relaxed);
    }

    fn refuse(&self, made: usize) -> usize {
        self.refused.fetch_add(1, Ordering::Relaxed);
        made
    }

    /// Looks a recent inode up under the lock (in `NOFS` scope, since the
    /// copy allocates) and checks it outside; `true` if it was cached.
    fn stat(&self, rng: &mut Rng) -> bool {
        let newest = self.next_inode.load(Ordering::Relaxed);
        if newest == 0 {
            return false;
        }
        let ino = newest - 1 - rng.below(newest.min(1 << 14));
        let look = || self.lock().map.get(&ino).map(|v| v.to_vec());
        let copy = if self.drop_scope { look() } else { reclaim::with_nofs(look) };
        let Some(copy) = copy else { return false };
        if let Err(m) = verify::check_len(&copy, self.tag(ino), self.len(ino)) {
            corrupt(format_args!("inode {ino}: {m}"));
        }
        true
    }

    fn verify_all(&self) -> usize {
        let fs = self.lock();
        for (&ino, v) in &fs.map {
            if let Err(m) = verify::check_len(v, self.tag(ino), self.len(ino)) {
                corrupt(format_args!("inode {ino} at the end: {m}"));
            }
        }
        fs.map.len()
    }
}

/// The inode cache's shrinker: blocks on the filesystem lock, so it needs FS.
struct InodeShrinker(Arc<Fs>);

impl Shrinker for InodeShrinker {
    fn count(&self, _: &ShrinkControl) -> CountResult {
        match self.0.inodes.load(Ordering::Relaxed) {
            0 => CountResult::Empty,
            n => CountResult::Count(n),
        }
    }

    fn scan(&self, sc: &ShrinkControl) -> ScanResult {
        if sc.scope().contains(ScopeFlags::NOFS) || reclaim::current_scope().contains(ScopeFlags::NOFS) {
            self.0.scans_in_nofs.fetch_add(1, Ordering::Relaxed);
        }
        let mut fs = self.0.lock();
        let mut freed = 0;
        while freed < sc.nr_to_scan() {
            let Some(ino) = fs.fifo.pop_front() else { break };
            if fs.map.remove(&ino).is_some() {
                self.0.inodes.fetch_sub(1, Ordering::Relaxed);
                freed += 1;
            }
        }
        ScanResult::Freed(freed)
    }
}

fn main(cfg: &ChildConfig) -> i32 {
    let fs = Arc::new(Fs {
        lock: Mutex::named("fs lock", Inodes { map: HashMap::new(), fifo: VecDeque::new() }),
        seed: cfg.seed,
        next_inode: AtomicU64::new(0),
        inodes: AtomicUsize::new(0),
        refused: AtomicU64::new(0),
        journals: AtomicU64::new(0),
        scans_in_nofs: AtomicU64::new(0),
        shrinkalloc: cfg.allocator.is_shrinkalloc(),
        drop_scope: std::env::var_os("SHRINKALLOC_STRESS_NOFS_DROP_SCOPE").is_some_and(|v| v == "1"),
    });
    let blocks = Cache::new(cfg.seed ^ 0xb10c, cfg.allocator.registers_shrinkers().then_some("block-cache"));
    let handles: Vec<ShrinkerHandle> = if cfg.allocator.registers_shrinkers() {
        vec![reclaim::register(InodeShrinker(fs.clone()), ShrinkerOptions::new("inode-cache").needs(Needs::FS))]
    } else {
        Vec::new()
    };
    if shrinkalloc::lockdep::is_enabled() && !handles.is_empty() {
        // Reclaim lockdep learns that the inode shrinker takes the lock.
        fs.create_inodes(1);
        reclaim::reclaim(usize::MAX, Level::Critical);
    }
    let run = Run::new(cfg);
    let fields = || nofs_fields(&fs, &blocks, &handles);
    // A third of the growth is inodes (writers), the rest blocks (readers).
    let bytes_per_sec = GROWTH * cfg.limit as f64 / cfg.duration.as_secs_f64().max(0.1);
    let writers = (cfg.threads / 2).max(1);
    let readers = cfg.threads.saturating_sub(writers).max(1);
    let holds_per_sec = bytes_per_sec / 3.0 / ((MIN_INODE + MAX_INODE) / 2 * PER_HOLD) as f64 / writers as f64;
    let puts_per_sec = bytes_per_sec * 2.0 / 3.0 / Cache::MEAN_VALUE as f64 / readers as f64;
    run.supervise(&fields, || {
        thread::scope(|s| {
            for _ in 0..writers {
                let (fs, run) = (&fs, &run);
                s.spawn(move || write(fs, run, holds_per_sec, cfg.limit / JOURNAL_DIVISOR));
            }
            for t in 0..readers {
                let (fs, blocks, run) = (&fs, &blocks, &run);
                s.spawn(move || read(fs, blocks, run, Rng::new(cfg.seed, t as u64), puts_per_sec));
            }
        });
    });
    let verified = fs.verify_all() + blocks.verify_all();
    let mut last = fields();
    last.push(("verified", verified as u64));
    run.print(true, &|| last.clone());
    drop(handles);
    0
}

fn nofs_fields(fs: &Fs, blocks: &Cache, handles: &[ShrinkerHandle]) -> Vec<(&'static str, u64)> {
    let fs_stats = handles.first().map(|h| h.stats());
    vec![
        ("inodes", fs.inodes.load(Ordering::Relaxed) as u64),
        ("blocks", blocks.entries() as u64),
        ("journals", fs.journals.load(Ordering::Relaxed)),
        ("refused", fs.refused.load(Ordering::Relaxed)),
        ("fs_freed", fs_stats.as_ref().map_or(0, |s| s.objects_freed)),
        ("fs_skipped", fs_stats.as_ref().map_or(0, |s| s.skipped_by_mask)),
        ("fs_scans_in_nofs", fs.scans_in_nofs.load(Ordering::Relaxed)),
        ("block_evicted", blocks.evicted()),
    ]
}

/// With a hard limit in force, the size of a fresh allocation that crosses
/// it by `margin`, after giving cached free memory back (a journal reusing
/// the last one's cached block would charge nothing, and whether reclaim
/// ran in the lock holder would be left to chance); else 0.
fn past_the_hard_limit(margin: usize) -> usize {
    let Some(hard) = reclaim::stats().hard_limit else { return 0 };
    shrinkalloc::purge();
    hard.saturating_sub(shrinkalloc::stats().committed) + margin
}

/// A writer: paced holds of the filesystem lock, each creating inodes or
/// committing a journal.
fn write(fs: &Fs, run: &Run, holds_per_sec: f64, journal_len: usize) {
    let (mut holds, mut journals) = (0, 0);
    while !run.done() {
        if journals < due(run.elapsed(), JOURNALS_PER_SEC) {
            fs.commit_journal(journal_len, journals);
            journals += 1;
        } else if holds < due(run.elapsed(), holds_per_sec) {
            if fs.create_inodes(PER_HOLD) < PER_HOLD {
                // Refused at the hard limit: back off outside the lock.
                thread::sleep(Duration::from_millis(1));
            }
            holds += 1;
        } else {
            thread::sleep(Duration::from_micros(200));
        }
        run.count(1);
    }
}

/// A reader: paced block-cache fills, and inode lookups in between.
fn read(fs: &Fs, blocks: &Cache, run: &Run, mut rng: Rng, puts_per_sec: f64) {
    let mut puts = 0;
    let mut tb = blocks.trace_buffer();
    while !run.done() {
        if puts < due(run.elapsed(), puts_per_sec) {
            blocks.put_new(&mut tb);
            puts += 1;
        } else if rng.percent(50) {
            fs.stat(&mut rng);
        } else {
            blocks.get_recent(&mut rng, &mut tb);
        }
        run.count(1);
    }
}
