//! When the kernel refuses a mapping with `ENOMEM` (here: an address-space
//! limit, `RLIMIT_AS`), the allocator raises the level to critical, runs
//! direct reclaim in the allocating thread, and retries: a cache growing
//! far past what the address space holds keeps every insertion, its
//! shrinker giving blocks back, and the passes are recorded under the
//! `mmap-failure` trigger. Without a shrinker the mapping still fails, and
//! cleanly: null to the caller, counted, the process alive.
//!
//! Each case runs in a child process, which sets its own limit.

mod pressure_support;
mod reclaim_support;

use std::time::Duration;

use pressure_support::{report, run_child, CHILD, MIB};
use reclaim_support::{Cache, CacheShrinker, Raw, BLOCK};
use shrinkalloc::reclaim::{self, register, Needs, ShrinkerOptions, Source, Trigger};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const TEST: &str = "mmap_enomem_reclaims_and_retries_or_fails_cleanly";
/// Address space the child leaves itself above what it has mapped.
const ROOM: usize = 128 * MIB;
/// What the cache tries to hold: three times that room.
const DEMAND: usize = 3 * ROOM;

#[test]
fn mmap_enomem_reclaims_and_retries_or_fails_cleanly() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
        return;
    }
    // No limits, no monitor: only the failed mapping can start reclaim.
    let env = [("SHRINKALLOC_CGROUP", Some("off")), ("SHRINKALLOC_MONITOR", Some("off"))];

    let out = run_child(TEST, "shrink", &env, None, Duration::from_secs(30));
    eprintln!("shrink child in {:?}:\n{}", out.elapsed, out.stdout);
    assert!(out.status.success(), "{}", out.output());
    let r = out.report();
    assert_eq!(r.num("refused"), 0, "an insertion failed although the shrinker could give: {}", out.output());
    assert!(r.num("inserted") as usize * BLOCK >= DEMAND);
    assert!(r.num("map_failures") > 0, "the address-space limit never bit: {}", out.output());
    assert!(r.num("passes") > 0, "no pass recorded under mmap-failure: {}", out.output());
    assert!(r.num("freed") > 0, "{}", out.output());
    assert_eq!(r.num("failed_maps"), 0, "{}", out.output());

    let out = run_child(TEST, "noshrink", &env, None, Duration::from_secs(30));
    eprintln!("noshrink child in {:?}:\n{}", out.elapsed, out.stdout);
    assert!(out.status.success(), "a refused mapping must not kill the process: {}", out.output());
    let r = out.report();
    assert!(r.num("refused") > 0, "{}", out.output());
    assert!(r.num("failed_maps") > 0, "{}", out.output());
    assert!(r.num("map_failures") > r.num("failed_maps"), "each failure was retried first: {}", out.output());
    pressure_support::remove_scratch_dir();
}

/// `VmSize` of this process, from `/proc/self/status`.
fn vm_size() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

fn child(mode: &str) {
    let cache = Cache::new(Needs::NONE);
    let h =
        (mode == "shrink").then(|| register(CacheShrinker(cache.clone()), ShrinkerOptions::new("as-cache").batch(1)));
    let limit = (vm_size() + ROOM) as libc::rlim_t;
    let rl = libc::rlimit { rlim_cur: limit, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: `rl` is a valid rlimit for the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    let (mut inserted, mut refused) = (0, 0);
    while inserted * BLOCK < DEMAND && refused < 3 {
        match Raw::try_new(BLOCK) {
            Some(b) => {
                cache.lock().push(b);
                inserted += 1;
            }
            None => refused += 1,
        }
    }
    drop(std::mem::take(&mut *cache.lock()));
    let s = reclaim::stats();
    let src = s.sources.iter().find(|x| x.source == Source::MmapFailure).unwrap();
    report(&[
        ("inserted", inserted.to_string()),
        ("refused", refused.to_string()),
        ("map_failures", src.events.to_string()),
        ("passes", s.passes_by_trigger[Trigger::MmapFailure as usize].to_string()),
        ("failed_maps", s.failed_maps.to_string()),
        ("freed", h.as_ref().map_or(0, |h| h.stats().objects_freed).to_string()),
    ]);
    println!("{s}");
}
