//! `cache`: a key-value cache daemon whose cache outgrows its memory limit.
//!
//! Request threads serve a paced stream of puts (new keys, never reused, so
//! the key space grows without bound; values 512 B..16 KiB) and, after each
//! put, [`GETS_PER_PUT`] gets (recent keys, the value copied out as a
//! response and its content checked). The work is fixed: puts whose values
//! add up to the run's demand (`--demand`, by default [`GROWTH`] times the
//! limit), spread evenly over the duration, so that unevicted the cache
//! would hold the whole demand at the end; the child ends when the last get
//! is served. Only eviction keeps it under a smaller limit. The cache is a
//! `shrinkalloc::cache::Lru`: under `shrinkalloc` its own shrinker evicts
//! the coldest entries of each shard it can lock without waiting (gets
//! `peek`, so the coldest are the oldest puts); nothing else ever evicts (under the other
//! allocators it registers no shrinker). Every put and get is traced
//! (`trace.rs`) for the oracle.
//!
//! Invariant: a value's length and content are functions of the seed and its
//! key, so any value read back is checked without remembering it; `entries`
//! and `bytes` are the Lru's entry count and weighted size (value bytes).
//!
//! Status fields: `puts`, `gets`, `hits`, `entries`, `cache_bytes`,
//! `evicted`, `demand` (bytes), `cpu_ms` (the child's CPU time); the final
//! line adds `verified` (entries checked at the end).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use shrinkalloc::cache::Lru;

use super::{corrupt, cpu_ms, due, ChildConfig, Expect, Launch, Run, Scenario};
use crate::allocator::{Allocator, ALL};
use crate::trace::{Kind, Record, Trace, TraceBuf};
use crate::verify::{self, mix, Rng};

/// The `cache` scenario.
pub static SCENARIO: Scenario = Scenario {
    name: "cache",
    about: "a multi-threaded key-value cache daemon whose cache grows to 4x the limit; \
            under shrinkalloc a shrinker evicts its oldest entries",
    launch: Launch::InProcess(main),
    default_allocators: &ALL,
    default_duration: Duration::from_secs(20),
    expect,
    traced: true,
};

fn expect(a: Allocator) -> Expect {
    if a.registers_shrinkers() {
        Expect::Survives
    } else {
        Expect::DiesAtLimit
    }
}

/// Unevicted, the cache would hold this many times the limit at the end
/// (the demand, unless `--demand` says otherwise).
pub const GROWTH: f64 = 4.0;
/// Gets served after each put.
pub const GETS_PER_PUT: u64 = 8;
const MIN_VALUE: usize = 512;
const MAX_VALUE: usize = 16 << 10;
const SHARDS: usize = 64;
/// Gets pick among this many most recent keys.
const HOT_KEYS: u64 = 1 << 16;

/// A sharded key-value cache of stamped values, on `shrinkalloc::cache::Lru`
/// (whose shrinker evicts the coldest entries); also the block cache of the
/// `nofs` scenario.
pub struct Cache {
    lru: Lru<u64, Arc<[u8]>>,
    seed: u64,
    next_key: AtomicU64,
    trace: Trace,
}

impl Cache {
    /// An empty cache whose values derive from `seed`, not traced; its
    /// shrinker is registered as `shrinker` (`None`: no shrinker, nothing
    /// evicts).
    pub fn new(seed: u64, shrinker: Option<&str>) -> Self {
        Self::traced(seed, Trace::off(), shrinker)
    }

    /// An empty cache whose values derive from `seed`, its requests traced
    /// to `trace`; its shrinker is registered as `shrinker`, if any.
    pub fn traced(seed: u64, trace: Trace, shrinker: Option<&str>) -> Self {
        let builder = Lru::builder(shrinker.unwrap_or("kv-cache")).shards(SHARDS).weigher(|_, v: &Arc<[u8]>| v.len());
        let lru = if shrinker.is_some() { builder.build() } else { builder.without_shrinker().build() };
        Cache { lru, seed, next_key: AtomicU64::new(0), trace }
    }

    /// A buffer for one request thread's trace records.
    pub fn trace_buffer(&self) -> TraceBuf<'_> {
        self.trace.buffer()
    }

    /// The mean value length, for pacing.
    pub const MEAN_VALUE: usize = (MIN_VALUE + MAX_VALUE) / 2;

    fn value_len(&self, key: u64) -> usize {
        MIN_VALUE + (mix(self.seed ^ key) % (MAX_VALUE - MIN_VALUE + 1) as u64) as usize
    }

    fn tag(&self, key: u64) -> u64 {
        mix(self.seed.rotate_left(17) ^ key)
    }

    /// Inserts the value of a new key; returns the key.
    pub fn put_new(&self, tb: &mut TraceBuf<'_>) -> u64 {
        // Relaxed: keys only need to be unique.
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let len = self.value_len(key);
        // Made in place: one allocation, as a `vec!` would be.
        let mut value: Arc<[u8]> = Arc::from_iter(std::iter::repeat_n(0u8, len));
        verify::stamp(Arc::get_mut(&mut value).expect("a new Arc is unique"), self.tag(key));
        self.lru.insert(key, value);
        let seq = self.trace.next_seq();
        tb.push(Record { seq, key: key as u32, size: len as u32, kind: Kind::Put });
        key
    }

    /// A get of one of the recent keys: copies the value out as a response
    /// and checks it; `true` on a hit.
    pub fn get_recent(&self, rng: &mut Rng, tb: &mut TraceBuf<'_>) -> bool {
        let newest = self.next_key.load(Ordering::Relaxed);
        if newest == 0 {
            return false;
        }
        let key = newest - 1 - rng.below(newest.min(HOT_KEYS));
        // `peek`: gets pick uniformly among the newest keys, so a hit says
        // nothing about the next use and insertion order (FIFO) is the
        // better policy; it is the one this scenario always measured.
        let value = self.lru.peek(&key);
        let seq = self.trace.next_seq();
        let kind = if value.is_some() { Kind::Hit } else { Kind::Miss };
        tb.push(Record { seq, key: key as u32, size: self.value_len(key) as u32, kind });
        let Some(value) = value else { return false };
        let response = value.to_vec();
        if let Err(m) = verify::check_len(&response, self.tag(key), self.value_len(key)) {
            corrupt(format_args!("cache key {key}: {m}"));
        }
        true
    }

    /// Checks every value still cached; returns how many.
    pub fn verify_all(&self) -> usize {
        let mut n = 0;
        self.lru.for_each(|&key, value| {
            if let Err(m) = verify::check_len(value, self.tag(key), self.value_len(key)) {
                corrupt(format_args!("cache key {key} at the end: {m}"));
            }
            n += 1;
        });
        n
    }

    /// Entries cached now.
    pub fn entries(&self) -> usize {
        self.lru.entry_count()
    }

    /// Value bytes cached now.
    pub fn bytes(&self) -> usize {
        self.lru.weighted_size()
    }

    /// Entries evicted so far.
    pub fn evicted(&self) -> u64 {
        self.lru.evicted()
    }
}

/// Request counters, shared by the request threads.
#[derive(Default)]
struct Counters {
    puts: AtomicU64,
    gets: AtomicU64,
    hits: AtomicU64,
}

/// The run's work: puts per thread, and their rate per thread.
fn work(cfg: &ChildConfig) -> (u64, f64) {
    let demand = cfg.demand.unwrap_or((GROWTH * cfg.limit as f64) as usize);
    let per_thread = (demand / Cache::MEAN_VALUE).div_ceil(cfg.threads).max(1) as u64;
    (per_thread, per_thread as f64 / cfg.duration.as_secs_f64().max(0.1))
}

fn main(cfg: &ChildConfig) -> i32 {
    let shrinker = cfg.allocator.registers_shrinkers().then_some("kv-cache");
    let cache = Cache::traced(cfg.seed, Trace::from_env(), shrinker);
    let counters = Counters::default();
    let run = Run::new(cfg);
    let (quota, per_sec) = work(cfg);
    let demand = quota * cfg.threads as u64 * Cache::MEAN_VALUE as u64;
    let fields = || {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("puts", get(&counters.puts)),
            ("gets", get(&counters.gets)),
            ("hits", get(&counters.hits)),
            ("entries", cache.entries() as u64),
            ("cache_bytes", cache.bytes() as u64),
            ("evicted", cache.evicted()),
            ("demand", demand),
            ("cpu_ms", cpu_ms()),
        ]
    };
    run.supervise(&fields, || {
        thread::scope(|s| {
            for t in 0..cfg.threads {
                let (cache, counters, run) = (&cache, &counters, &run);
                s.spawn(move || serve(cache, counters, run, Rng::new(cfg.seed, t as u64), quota, per_sec));
            }
        });
    });
    let verified = cache.verify_all();
    let mut last = fields();
    last.push(("verified", verified as u64));
    run.print(true, &|| last.clone());
    0
}

/// One request thread: `quota` puts paced at `puts_per_sec`, each followed
/// by [`GETS_PER_PUT`] gets; sleeps while nothing is due.
fn serve(cache: &Cache, counters: &Counters, run: &Run, mut rng: Rng, quota: u64, puts_per_sec: f64) {
    const FLUSH: u64 = 64;
    let mut tb = cache.trace_buffer();
    let (mut puts, mut gets_due, mut gets, mut hits, mut ops) = (0u64, 0u64, 0u64, 0u64, 0u64);
    while puts < quota || gets_due > 0 {
        if gets_due > 0 {
            gets_due -= 1;
            gets += 1;
            hits += u64::from(cache.get_recent(&mut rng, &mut tb));
        } else if puts < due(run.elapsed(), puts_per_sec) {
            cache.put_new(&mut tb);
            puts += 1;
            gets_due = GETS_PER_PUT;
            // Relaxed: statistics.
            counters.puts.fetch_add(1, Ordering::Relaxed);
        } else {
            let next = Duration::from_secs_f64((puts + 1) as f64 / puts_per_sec);
            // At least 1 ms, so that requests come in bursts, not a sleep each.
            let nap = next.saturating_sub(run.elapsed());
            thread::sleep(nap.clamp(Duration::from_millis(1), Duration::from_millis(2)));
            continue;
        }
        ops += 1;
        if ops % FLUSH == 0 {
            counters.gets.fetch_add(gets, Ordering::Relaxed);
            counters.hits.fetch_add(hits, Ordering::Relaxed);
            run.count(FLUSH);
            (gets, hits) = (0, 0);
        }
    }
    counters.gets.fetch_add(gets, Ordering::Relaxed);
    counters.hits.fetch_add(hits, Ordering::Relaxed);
    run.count(ops % FLUSH);
}
