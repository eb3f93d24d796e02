//! `cache-c`: the `cache` scenario as a C daemon — `sa-cached`
//! (`stress/cached/`), a block cache written against `include/shrinkalloc.h`
//! with zero configuration, linked against `libshrinkalloc` as `sa-fused`
//! is, measured against the oracle the same way.
//!
//! The daemon serves blocks of 4-32 KiB out of a block space of `--demand`
//! bytes (default [`DEFAULT_DEMAND`]), from [`THREADS`] request threads,
//! paced over the duration: 80% of the requests go to the hot tenth of the
//! blocks, the rest anywhere (the long tail). Each request looks the block's
//! metadata up in one LRU and the block in another, both behind shrinkers
//! registered through the C API; a miss allocates and fills the block. Every
//! block request is traced to the harness (`trace.rs`). The harness builds
//! the daemon before the first run, outside any cgroup (its sources are
//! built into this binary); the driver starts it in the run's cgroup under
//! the run's allocator and follows its status lines until it ends.
//!
//! Expected: under shrinkalloc the daemon survives, every block it served
//! or still holds checked; without its shrinkers an allocation is refused at
//! the hard limit and it aborts (`memory allocation of N bytes failed`);
//! glibc, jemalloc and mimalloc are OOM-killed.
//!
//! Status fields: the daemon's `requests`, `blocks`, `cache_bytes`, `hits`,
//! `misses`, `evicted`, `scans`, `meta`, `meta_hits`, `meta_evicted`,
//! `alloc_failed`, `corrupt`, `cpu_ms` (the daemon's CPU time), `verified`
//! (blocks checked at the end) and, under shrinkalloc, its statistics
//! (`daemon::SA_FIELDS`); `demand` (bytes).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::daemon::{self, Daemon, Figures};
use super::{ChildConfig, Column, Driver, Env, Expect, Launch, Run, Scenario, Unit, EXIT_CORRUPT};
use crate::allocator;
use crate::status;
use crate::trace;

/// The `cache-c` scenario.
pub static SCENARIO: Scenario = Scenario {
    name: "cache-c",
    about: "a block-cache daemon in C (4-32 KiB blocks, an LRU over a hot tenth and a long tail, two \
            threads) whose two caches are behind shrinkers registered through the C API",
    launch: Launch::Driver(&DRIVER),
    default_allocators: &allocator::ALL,
    default_duration: Duration::from_secs(20),
    expect: |a| if a.registers_shrinkers() { Expect::Survives } else { Expect::DiesAtLimit },
    traced: true,
};

static DRIVER: Driver = Driver {
    prepare,
    main,
    cleanup: |_| Ok(()),
    columns: &[
        Column { field: "requests", header: "requests", unit: Unit::Count },
        Column { field: "cache_bytes", header: "cached at the end", unit: Unit::Bytes },
        Column { field: "evicted", header: "blocks evicted", unit: Unit::Count },
        Column { field: "meta_evicted", header: "metadata evicted", unit: Unit::Count },
        Column { field: "verified", header: "checked at the end", unit: Unit::Count },
    ],
};

/// The block space without `--demand`.
pub const DEFAULT_DEMAND: usize = 1 << 30;
/// The daemon's request threads.
pub const THREADS: usize = 2;

/// The variable that tells the driver where the built daemon is.
const CACHED_ENV: &str = "SHRINKALLOC_STRESS_CACHED";

/// The daemon's sources, built into this binary.
const SOURCES: [(&str, &str); 4] = [
    ("sa_cached.c", include_str!("../../cached/sa_cached.c")),
    ("lru.c", include_str!("../../cached/lru.c")),
    ("lru.h", include_str!("../../cached/lru.h")),
    ("shrinkalloc.h", include_str!("../../../include/shrinkalloc.h")),
];

const CACHE_FIELDS: [&str; 14] = [
    "requests",
    "blocks",
    "cache_bytes",
    "hits",
    "misses",
    "evicted",
    "scans",
    "meta",
    "meta_hits",
    "meta_evicted",
    "alloc_failed",
    "corrupt",
    "cpu_ms",
    "verified",
];

fn prepare() -> Result<Env, String> {
    daemon::require("cc", "gcc")?;
    let lib = daemon::library()?;
    let exe = daemon::build(&lib, "sa-cached", &SOURCES, &[], &[])?;
    Ok(vec![
        (daemon::LIB_ENV.to_string(), lib.display().to_string()),
        (CACHED_ENV.to_string(), exe.display().to_string()),
    ])
}

fn main(cfg: &ChildConfig) -> i32 {
    let Ok(exe) = std::env::var(CACHED_ENV) else {
        status::print_error(&format!("the harness gives this driver {CACHED_ENV}"));
        return super::EXIT_USAGE;
    };
    let mut names = CACHE_FIELDS.to_vec();
    names.push("demand");
    if cfg.allocator.is_shrinkalloc() {
        names.extend(daemon::SA_FIELDS);
    }
    let figures = Arc::new(Figures::new(names));
    let demand = cfg.demand.unwrap_or(DEFAULT_DEMAND);
    figures.set("demand", demand as u64);
    let run = Arc::new(daemon::driver_run(cfg));
    let done = Arc::new(AtomicBool::new(false));
    let mut cached = match start(cfg, Path::new(&exe), demand, &figures, &run, &done) {
        Ok(d) => d,
        Err(e) => {
            status::print_error(&format!("cannot start sa-cached: {e}"));
            return 1;
        }
    };
    let fields = || figures.fields();
    let mut ended = None;
    let limit = cfg.duration + Duration::from_secs(20);
    run.supervise(&fields, || ended = cached.wait_timeout(limit));
    let Some(status) = ended else {
        cached.kill();
        status::print_error(&format!("sa-cached still ran {} s past its duration", 20));
        return 1;
    };
    if status.success() && done.load(Ordering::Relaxed) {
        run.print(true, &fields);
        return 0;
    }
    run.print(false, &fields);
    eprintln!("shrinkalloc-stress child: sa-cached ended with {}", daemon::describe(status));
    if status.code() == Some(EXIT_CORRUPT) {
        status::print_error("sa-cached found a block that differs from its pattern (see its stderr)");
        return EXIT_CORRUPT;
    }
    daemon::end_like(status)
}

/// Starts the daemon under the run's allocator, its trace going to the
/// harness's pipe; its status lines set `figures` and count `run`'s ops.
fn start(
    cfg: &ChildConfig,
    exe: &Path,
    demand: usize,
    figures: &Arc<Figures>,
    run: &Arc<Run>,
    done: &Arc<AtomicBool>,
) -> std::io::Result<Daemon> {
    let mut cmd = Command::new(exe);
    cmd.args(["--demand", &demand.to_string()]);
    cmd.args(["--duration-ms", &cfg.duration.as_millis().to_string()]);
    cmd.args(["--seed", &cfg.seed.to_string(), "--threads", &THREADS.to_string()]);
    if let Ok(fd) = std::env::var(trace::FD_ENV) {
        cmd.args(["--trace-fd", &fd]);
    }
    if !cfg.allocator.registers_shrinkers() {
        cmd.arg("--no-shrinker");
    }
    cmd.env_remove("LD_PRELOAD");
    if let Some(lib) = daemon::malloc_preload(cfg.allocator, None) {
        cmd.env("LD_PRELOAD", lib);
    }
    let (f, r, d) = (Arc::clone(figures), Arc::clone(run), Arc::clone(done));
    let mut requests = 0;
    Daemon::start(
        &mut cmd,
        move |line| match line.split_once(' ').unwrap_or((line, "")) {
            ("cache", rest) => {
                for (k, v) in rest.split_whitespace().filter_map(|kv| kv.split_once('=')) {
                    if let (Some(name), Ok(v)) = (CACHE_FIELDS.iter().find(|n| **n == k), v.parse()) {
                        f.set(name, v);
                    }
                }
                let now = f.get("requests");
                r.count(now.saturating_sub(requests));
                requests = now;
            }
            ("sa", json) => daemon::take_sa_stats(json, &f),
            ("done", _) => d.store(true, Ordering::Relaxed),
            _ => println!("{line}"),
        },
        |line| eprintln!("sa-cached: {line}"),
    )
}
