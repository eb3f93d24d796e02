//! Background reclaim: crossing the soft limit wakes library reclaimer
//! threads, one per context class, which shrink the caches until committed
//! memory is back under the soft limit; each shrinker is called in the
//! background only by the reclaimer of its class (FS shrinkers by the
//! unrestricted one, IO by the NOFS one, the rest by the NOIO one). A
//! `fork()` child, which inherits no threads, starts its own reclaimers.
//!
//! The two tests share the limits: they run one at a time.

mod reclaim_support;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reclaim_support::{committed, wait_until, watchdog, Cache, CacheShrinker, Caller, MIB};
use shrinkalloc::reclaim::{register, set_hard_limit, set_soft_limit, stats, Needs, ShrinkerOptions};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    watchdog(Duration::from_secs(90), "reclaim_background");
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets only a soft limit, `extra` above what is committed once purged.
fn soft_limit_above(extra: usize) -> usize {
    shrinkalloc::purge();
    let soft = committed() + extra;
    set_hard_limit(None);
    set_soft_limit(Some(soft));
    soft
}

#[test]
fn crossing_the_soft_limit_wakes_the_reclaimer_of_each_class() {
    let _s = serial();
    let caches = [Cache::new(Needs::FS), Cache::new(Needs::IO), Cache::new(Needs::NONE)];
    let _h: Vec<_> = caches
        .iter()
        .zip(["bg-fs", "bg-io", "bg-none"])
        .map(|(c, name)| register(CacheShrinker(c.clone()), ShrinkerOptions::new(name).needs(c.needs).batch(1)))
        .collect();
    let soft = soft_limit_above(24 * MIB);
    for c in &caches {
        assert!(c.fill(6)); // 36 MiB in all: past the soft limit
    }
    let first = |c: &Cache| c.calls.scan.load(std::sync::atomic::Ordering::Relaxed) > 0;
    assert!(wait_until(Duration::from_secs(10), || caches.iter().any(|c| first(c))), "no background scan");
    let back = wait_until(Duration::from_secs(20), || committed() <= soft);
    assert!(back, "committed {} MiB stays above the soft limit {} MiB: {}", committed() / MIB, soft / MIB, stats());
    let [fs, io, none] = &caches;
    for (c, class) in [(fs, Caller::Reclaimer), (io, Caller::ReclaimerNofs), (none, Caller::ReclaimerNoio)] {
        let others: u64 = [Caller::Reclaimer, Caller::ReclaimerNofs, Caller::ReclaimerNoio]
            .into_iter()
            .filter(|&k| k != class)
            .map(|k| c.calls.scans_by(k))
            .sum();
        assert_eq!(others, 0, "{:?} cache scanned by another class's reclaimer", c.needs);
        assert_eq!(c.calls.scans_by(Caller::Other), 0, "no direct reclaim without a hard limit");
        assert_eq!(c.calls.violations.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
    assert!(caches.iter().any(|c| c.len() < 6), "something was freed");
    assert!(stats().workers_started >= 3);
    set_soft_limit(None);
}

#[test]
fn fork_child_starts_its_own_reclaimers() {
    let _s = serial();
    // Make sure the parent has reclaimers, so that the child inherits their
    // (now meaningless) state.
    let warm = Cache::new(Needs::NONE);
    let hw = register(CacheShrinker(warm.clone()), ShrinkerOptions::new("fork-warm").batch(1));
    soft_limit_above(8 * MIB);
    // 48 MiB of live blocks: past the soft line even if up to 24 MiB of what
    // was committed when it was set (huge-block slack) is given back by the
    // background pass's purge, which alone once met the goal (1 CI-check run
    // in 4), leaving the shrinker uncalled.
    assert!(warm.fill(24));
    let warmed = wait_until(Duration::from_secs(10), || warm.calls.scans_by(Caller::ReclaimerNoio) > 0);
    assert!(warmed, "no background scan: {} blocks, {:?}; {}", warm.len(), hw.stats(), stats());
    set_soft_limit(None);
    drop(hw);
    let started_before = stats().workers_started;

    // SAFETY: the child only allocates, registers a shrinker and waits
    // (the allocator and the registry are fork-safe), then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let cache = Cache::new(Needs::NONE);
        let _h = register(CacheShrinker(cache.clone()), ShrinkerOptions::new("in-child").batch(1));
        soft_limit_above(8 * MIB);
        let ok = cache.fill(8)
            && wait_until(Duration::from_secs(10), || cache.calls.scans_by(Caller::ReclaimerNoio) > 0)
            && stats().workers_started > started_before;
        // SAFETY: _exit ends the child without running the parent's atexit work.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let end = Instant::now() + Duration::from_secs(30);
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if Instant::now() > end {
            // SAFETY: killing our own hung child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the fork child hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status:#x}");
}
