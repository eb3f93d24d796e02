//! `cache::Lru` under threads and reclaim: four threads insert, get (the
//! value's content checked against its key every time), remove and
//! overwrite while a fifth runs reclaim passes and explicit shrinks; the
//! counts add up at the end and every surviving entry is intact. Eviction
//! takes the coldest entries, and reclaim never waits for a shard lock
//! that a thread holds (it skips it and says stop).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use shrinkalloc::cache::Lru;
use shrinkalloc::reclaim::{reclaim, Level};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// The tests share the shrinker registry: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ x >> 33
}

/// The value of `key` at `version`: its length and every byte follow from both.
fn value(key: u64, version: u64) -> Arc<[u8]> {
    let len = 16 + (mix(key) % 2048) as usize;
    let mut v = vec![0u8; len];
    v[..8].copy_from_slice(&version.to_le_bytes());
    for (i, b) in v[8..].iter_mut().enumerate() {
        *b = mix(key ^ version << 32 ^ i as u64) as u8;
    }
    v.into()
}

fn check(key: u64, v: &[u8]) {
    let version = u64::from_le_bytes(v[..8].try_into().unwrap());
    assert_eq!(&*value(key, version), v, "key {key} version {version}: content corrupt");
}

#[test]
fn reclaim_racing_four_threads_keeps_every_value_intact() {
    let _s = serial();
    let cache: Arc<Lru<u64, Arc<[u8]>>> =
        Arc::new(Lru::builder("lru-threads").weigher(|_, v: &Arc<[u8]>| v.len()).shards(16).build());
    let done = Arc::new(AtomicBool::new(false));
    let (gets, hits) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reclaimer = {
        let (cache, done) = (cache.clone(), done.clone());
        thread::spawn(move || {
            let mut passes = 0u64;
            while !done.load(Ordering::Relaxed) || passes < 10 {
                // Passes over an empty cache (before the workers' first
                // inserts) do not count: at least ten run over a cache
                // with entries, racing the workers or, if they were not
                // scheduled, after them.
                if cache.entry_count() == 0 && !done.load(Ordering::Relaxed) {
                    thread::yield_now();
                    continue;
                }
                // Free pages given back first, so that the pass cannot meet
                // its target by purging what `shrink` and the workers freed
                // and must ask the cache.
                shrinkalloc::purge();
                reclaim(1 << 20, Level::Critical);
                cache.shrink(32);
                passes += 1;
            }
        })
    };
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let (cache, gets, hits) = (cache.clone(), gets.clone(), hits.clone());
            thread::spawn(move || {
                let mut rng = mix(t + 1);
                for op in 0..40_000u64 {
                    rng = mix(rng);
                    let key = rng % 4096;
                    match op % 8 {
                        0 | 1 => cache.insert(key, value(key, op)),
                        2 => {
                            if let Some(v) = cache.remove(&key) {
                                check(key, &v);
                            }
                        }
                        _ => {
                            gets.fetch_add(1, Ordering::Relaxed);
                            if let Some(v) = cache.get(&key) {
                                hits.fetch_add(1, Ordering::Relaxed);
                                check(key, &v);
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    reclaimer.join().unwrap();
    let (mut n, mut bytes) = (0, 0);
    cache.for_each(|&k, v| {
        check(k, v);
        n += 1;
        bytes += v.len();
    });
    assert_eq!((cache.entry_count(), cache.weighted_size()), (n, bytes));
    let stats = cache.shrinker().unwrap().stats();
    assert!(stats.objects_freed > 0, "reclaim evicted nothing: {stats:?}");
    assert!(cache.evicted() >= stats.objects_freed);
    assert!(hits.load(Ordering::Relaxed) > 0 && hits.load(Ordering::Relaxed) < gets.load(Ordering::Relaxed));
}

#[test]
fn eviction_takes_the_coldest_entries_of_every_shard() {
    let _s = serial();
    let cache: Lru<u64, u64> = Lru::builder("lru-order").without_shrinker().shards(8).build();
    for k in 0..4000 {
        cache.insert(k, k);
    }
    for k in (0..4000).step_by(4) {
        assert_eq!(cache.get(&k), Some(k));
    }
    // Half the entries go; per shard that is half of it, less than its cold part.
    let evicted = cache.shrink(2000);
    assert!((2000..2000 + 8).contains(&evicted), "{evicted}");
    for k in (0..4000).step_by(4) {
        assert!(cache.contains_key(&k), "hot key {k} was evicted");
    }
    assert_eq!(cache.entry_count(), 4000 - evicted);
}

#[test]
fn reclaim_from_a_thread_holding_a_shard_lock_skips_it_instead_of_waiting() {
    let _s = serial();
    let cache: Lru<u64, u64> = Lru::builder("lru-busy").shards(1).build();
    (0..100).for_each(|k| cache.insert(k, k));
    let before = cache.shrinker().unwrap().stats();
    // `for_each` holds the only shard's lock while its callback runs.
    let mut first = true;
    cache.for_each(|_, _| {
        if std::mem::take(&mut first) {
            reclaim(usize::MAX, Level::Critical);
        }
    });
    let after = cache.shrinker().unwrap().stats();
    assert_eq!(cache.entry_count(), 100, "nothing could be evicted");
    assert!(after.stops > before.stops, "the busy shard made the scan stop: {after:?}");
    reclaim(usize::MAX, Level::Critical);
    assert!(cache.entry_count() < 100, "once the lock is free reclaim evicts");
}

#[test]
fn dropping_the_cache_unregisters_its_shrinker() {
    let _s = serial();
    let cache: Lru<u64, u64> = Lru::new("lru-dropped");
    cache.insert(1, 1);
    assert!(shrinkalloc::reclaim::stats().shrinkers.iter().any(|s| s.name == "lru-dropped"));
    drop(cache);
    assert!(shrinkalloc::reclaim::stats().shrinkers.iter().all(|s| s.name != "lru-dropped"));
}
