//! Under a hard limit, a cache that grows without bound stays under the
//! limit and the program keeps running: every insertion succeeds because
//! reclaim (background past the soft limit, direct at the hard one) makes
//! the cache's shrinker give blocks back. `reclaim_limit_no_shrinker.rs`
//! runs the same growth without a shrinker and sees a clean failure.

mod reclaim_support;

use std::time::Duration;

use reclaim_support::{committed, limit_above_committed, watchdog, Cache, CacheShrinker, Caller, Raw, BLOCK, MIB};
use shrinkalloc::reclaim::{register, set_hard_limit, set_soft_limit, stats, Needs, ShrinkerOptions};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// Blocks inserted: ten times what the limit allows.
const INSERTS: usize = 320;
/// What reclaim's own allocations (made with `RECLAIMING`, from the
/// reserve) may add above the hard limit: a few pages.
const RECLAIM_SLACK: usize = MIB;

#[test]
fn unbounded_cache_stays_under_the_hard_limit_and_keeps_running() {
    watchdog(Duration::from_secs(120), "the unbounded cache test");
    let hard = limit_above_committed(64 * MIB);
    set_soft_limit(None); // the derived soft limit (7/8) wakes background reclaim
    let cache = Cache::new(Needs::NONE);
    let h = register(CacheShrinker(cache.clone()), ShrinkerOptions::new("unbounded").batch(1));
    let mut peak = 0;
    for i in 0..INSERTS {
        let b = Raw::try_new(BLOCK).unwrap_or_else(|| panic!("insert {i} refused: {}", stats()));
        cache.lock().push(b);
        peak = peak.max(committed());
    }
    eprintln!("peak {} MiB of {} MiB; {}", peak / MIB, hard / MIB, stats());
    assert!(peak <= hard + RECLAIM_SLACK, "committed {peak} went past the hard limit {hard}");
    let held = cache.len();
    assert!(held > 0 && held < INSERTS / 4, "the shrinker kept the cache in check: {held} blocks");
    assert!(h.stats().objects_freed as usize >= INSERTS - held - 1);
    assert!(cache.calls.scans_by(Caller::Other) + cache.calls.scans_by(Caller::ReclaimerNoio) > 0);
    assert_eq!(stats().failed_charges, 0);
    set_hard_limit(None);
}
