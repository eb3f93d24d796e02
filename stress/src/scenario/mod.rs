//! The scenarios, and what every child has in common.
//!
//! A [`Scenario`] names a workload, says how its child is launched, which
//! allocators it runs under by default and what each is expected to do.
//! Every child is this binary re-executed as `child <scenario>`: either the
//! workload itself ([`Launch::InProcess`]), or a driver that starts a C
//! daemon and drives a workload at it ([`Launch::Driver`]: `preload`, an
//! unmodified `redis-server` under `LD_PRELOAD`; `fuse`, a FUSE filesystem
//! linked against the C library; `cache-c`, a block-cache daemon linked
//! against it; see `daemon.rs`).
//!
//! Invariant, for every child: it reports on stdout in the [`status`]
//! protocol, about every [`STATUS_EVERY`]; it exits 0 only after checking
//! every block it still holds, [`EXIT_CORRUPT`] on a failed content check and
//! [`EXIT_HANG`] when its watchdog sees no operation complete for
//! [`HANG_AFTER`]; and its work depends only on its [`ChildConfig`]. A driver
//! whose daemon died ends as the daemon did (`daemon::end_like`).

pub mod cache;
pub mod cache_c;
pub mod churn;
pub mod daemon;
pub mod fuse;
pub mod nofs;
pub mod preload;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::allocator::Allocator;
use crate::status;

/// A child's exit status after a failed content check.
pub const EXIT_CORRUPT: i32 = 3;
/// A child's exit status when its watchdog saw it stop making progress.
pub const EXIT_HANG: i32 = 4;
/// A child's exit status on bad arguments.
pub const EXIT_USAGE: i32 = 2;
/// How often a child prints a status line.
pub const STATUS_EVERY: Duration = Duration::from_millis(250);
/// How long a child may go without completing an operation.
pub const HANG_AFTER: Duration = Duration::from_secs(10);

/// How a scenario's child is started.
#[derive(Clone, Copy)]
pub enum Launch {
    /// This binary, re-executed as `child <scenario>`, runs the function.
    InProcess(fn(&ChildConfig) -> i32),
    /// This binary, re-executed as `child <scenario>`, starts a C daemon
    /// (which inherits its cgroup) under the run's allocator and drives it.
    Driver(&'static Driver),
}

/// A scenario whose child drives a C daemon: what the harness does for it
/// besides starting the child. The child itself (the driver) runs on the
/// system allocator with nothing preloaded: what is measured is the daemon.
pub struct Driver {
    /// Runs in the harness, outside every cgroup, once before the first run:
    /// builds or finds what the child needs (the C library, the daemon) and
    /// returns the environment the child gets. `Err` says, loudly, what is
    /// missing; every run then fails as a harness error.
    pub prepare: fn() -> Result<Env, String>,
    /// The child's work.
    pub main: fn(&ChildConfig) -> i32,
    /// Runs in the harness after each child is gone (its cgroup emptied),
    /// with the work directory the child was given in [`WORKDIR_ENV`]:
    /// undoes what a killed child could not (a mount left behind). `Err`
    /// fails the run, as a cgroup left behind does.
    pub cleanup: fn(&Path) -> Result<(), String>,
    /// Figures of the child's last status line shown in a second table.
    pub columns: &'static [Column],
}

/// Environment variables, as (name, value).
pub type Env = Vec<(String, String)>;

/// Where a driver's child may put files (and mounts): a fresh directory per
/// run, removed by the harness after [`Driver::cleanup`].
pub const WORKDIR_ENV: &str = "SHRINKALLOC_STRESS_WORKDIR";

/// One column of a driver scenario's second table.
pub struct Column {
    /// The status field shown.
    pub field: &'static str,
    /// The column's header.
    pub header: &'static str,
    /// How the value reads.
    pub unit: Unit,
}

/// How a [`Column`]'s value reads.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Bytes, shown in MiB.
    Bytes,
    /// A plain count.
    Count,
    /// A percentage.
    Percent,
}

/// What a run under one allocator is expected to end in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Runs for the whole duration, checks pass, no OOM kill.
    Survives,
    /// Is stopped by the limit: OOM-killed, or an allocation refused at
    /// shrinkalloc's hard limit.
    DiesAtLimit,
}

/// A workload the harness can run.
pub struct Scenario {
    /// The command-line name.
    pub name: &'static str,
    /// One sentence for the help text and the report header.
    pub about: &'static str,
    /// How the child is started.
    pub launch: Launch,
    /// The allocators `run` uses without `--allocators`.
    pub default_allocators: &'static [Allocator],
    /// The run length without `--duration`.
    pub default_duration: Duration,
    /// What each allocator is expected to do.
    pub expect: fn(Allocator) -> Expect,
    /// Whether the child traces its cache's requests (`trace.rs`), which
    /// the harness replays through the oracle (`oracle.rs`).
    pub traced: bool,
}

/// Every scenario, in help-text order.
pub static ALL: [&Scenario; 6] =
    [&cache::SCENARIO, &cache_c::SCENARIO, &churn::SCENARIO, &nofs::SCENARIO, &preload::SCENARIO, &fuse::SCENARIO];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.into_iter().find(|s| s.name == name)
}

/// What a child is told on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildConfig {
    /// The allocator the child runs under (it decides shrinker registration).
    pub allocator: Allocator,
    /// The memory limit of the run, in bytes (sizes the workload).
    pub limit: usize,
    /// How long to run.
    pub duration: Duration,
    /// The seed of every random choice.
    pub seed: u64,
    /// Worker threads.
    pub threads: usize,
    /// The bytes the workload would hold unconstrained (`--demand`), for
    /// the scenarios that take it; `None`: the scenario's default.
    pub demand: Option<usize>,
}

impl ChildConfig {
    /// The arguments after `child <scenario>`.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--allocator".into(),
            self.allocator.name().into(),
            "--limit".into(),
            self.limit.to_string(),
            "--duration-ms".into(),
            self.duration.as_millis().to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--threads".into(),
            self.threads.to_string(),
            "--demand".into(),
            self.demand.unwrap_or(0).to_string(),
        ]
    }

    /// Parses what [`to_args`](Self::to_args) wrote.
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut cfg = ChildConfig {
            allocator: Allocator::ShrinkAlloc,
            limit: 0,
            duration: Duration::ZERO,
            seed: 0,
            threads: 4,
            demand: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || value.parse::<u64>().map_err(|_| format!("bad {flag} {value:?}"));
            match flag.as_str() {
                "--allocator" => {
                    cfg.allocator = Allocator::parse(value).ok_or_else(|| format!("unknown allocator {value:?}"))?
                }
                "--limit" => cfg.limit = number()? as usize,
                "--duration-ms" => cfg.duration = Duration::from_millis(number()?),
                "--seed" => cfg.seed = number()?,
                "--threads" => cfg.threads = (number()? as usize).max(1),
                "--demand" => cfg.demand = Some(number()? as usize).filter(|&d| d > 0),
                _ => return Err(format!("unknown child option {flag:?}")),
            }
        }
        if cfg.limit == 0 {
            return Err("--limit is required".into());
        }
        Ok(cfg)
    }
}

/// The child side of `child <scenario> ...`: returns the exit status.
pub fn child_main(scenario: &str, args: &[String]) -> i32 {
    let Some(s) = find(scenario) else {
        eprintln!("shrinkalloc-stress child: unknown scenario {scenario:?}");
        return EXIT_USAGE;
    };
    match (ChildConfig::parse(args), s.launch) {
        (Ok(cfg), Launch::InProcess(main)) => main(&cfg),
        (Ok(cfg), Launch::Driver(driver)) => (driver.main)(&cfg),
        (Err(e), _) => {
            eprintln!("shrinkalloc-stress child: {e}");
            EXIT_USAGE
        }
    }
}

/// Reports a failed check and ends the child with [`EXIT_CORRUPT`].
pub fn corrupt(what: std::fmt::Arguments<'_>) -> ! {
    status::print_error(&format!("corruption: {what}"));
    std::process::exit(EXIT_CORRUPT)
}

/// Scenario-specific fields of a status line.
pub type FieldsFn<'a> = &'a (dyn Fn() -> Vec<(&'static str, u64)> + Sync);

/// The running part of a child: its operation counter, start and deadline.
pub struct Run {
    /// Operations completed, by all workers (the watchdog's progress signal).
    pub ops: AtomicU64,
    /// Set when the workers must stop.
    pub stop: AtomicBool,
    started: Instant,
    cfg: ChildConfig,
}

impl Run {
    /// A run of `cfg` starting now.
    pub fn new(cfg: &ChildConfig) -> Self {
        Run { ops: AtomicU64::new(0), stop: AtomicBool::new(false), started: Instant::now(), cfg: cfg.clone() }
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the workers should stop (deadline passed).
    pub fn done(&self) -> bool {
        // Relaxed: a flag polled in loops; nothing is published through it.
        self.stop.load(Ordering::Relaxed)
    }

    /// Counts `n` completed operations.
    pub fn count(&self, n: u64) {
        // Relaxed: a statistic and a progress signal, ordered with nothing.
        self.ops.fetch_add(n, Ordering::Relaxed);
    }

    /// Runs `work` (which starts and joins the workers) with a status line
    /// every [`STATUS_EVERY`], a deadline that sets `stop`, and a watchdog
    /// that ends the child with [`EXIT_HANG`] if `ops` stops moving.
    pub fn supervise(&self, fields: FieldsFn<'_>, work: impl FnOnce()) {
        let finished = AtomicBool::new(false);
        thread::scope(|s| {
            s.spawn(|| self.report_and_watch(fields, &finished));
            work();
            // Relaxed: the supervisor only polls it.
            finished.store(true, Ordering::Relaxed);
        });
    }

    fn report_and_watch(&self, fields: FieldsFn<'_>, finished: &AtomicBool) {
        let (mut last_ops, mut last_progress) = (0, Instant::now());
        while !finished.load(Ordering::Relaxed) {
            thread::sleep(STATUS_EVERY);
            if self.elapsed() >= self.cfg.duration {
                self.stop.store(true, Ordering::Relaxed);
            }
            self.print(false, fields);
            let ops = self.ops.load(Ordering::Relaxed);
            if ops != last_ops {
                (last_ops, last_progress) = (ops, Instant::now());
            } else if last_progress.elapsed() >= HANG_AFTER && !finished.load(Ordering::Relaxed) {
                status::print_error(&format!(
                    "hang: no operation completed for {} s (ops={ops}, stop={})",
                    HANG_AFTER.as_secs(),
                    self.done()
                ));
                // SAFETY: _exit ends the process at once; the workers are
                // stuck, so nothing is left to unwind or flush but stdout,
                // which `print_error` flushed.
                unsafe { libc::_exit(EXIT_HANG) };
            }
        }
    }

    /// Prints a status line (or, with `last`, the final line) with the
    /// common fields first, then the scenario's own.
    pub fn print(&self, last: bool, fields: FieldsFn<'_>) {
        let mut all = vec![
            ("t_ms", self.elapsed().as_millis() as u64),
            ("ops", self.ops.load(Ordering::Relaxed)),
            ("rss", resident_bytes()),
        ];
        if self.cfg.allocator.is_shrinkalloc() {
            let s = shrinkalloc::stats();
            let r = shrinkalloc::reclaim::stats();
            all.extend([
                ("in_use", s.in_use as u64),
                ("committed", s.committed as u64),
                ("reclaim_passes", r.passes_by_level.iter().sum()),
                ("direct_passes", r.passes_by_trigger[0]),
                ("failed_charges", r.failed_charges),
                ("hard_limit", r.hard_limit.unwrap_or(0) as u64),
                ("soft_limit", r.soft_limit.unwrap_or(0) as u64),
            ]);
        }
        all.extend(fields());
        status::print(last, &all);
    }
}

/// This process's resident set size, from `/proc/self/statm`.
pub fn resident_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = text.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    pages * page
}

/// This process's CPU time (user and system, all threads), in milliseconds.
pub fn cpu_ms() -> u64 {
    // SAFETY: an all-zero `rusage` is a valid value for the kernel to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// How many of something paced at `per_sec` are due after `elapsed`.
pub fn due(elapsed: Duration, per_sec: f64) -> u64 {
    (elapsed.as_secs_f64() * per_sec) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_config_round_trips_through_its_arguments() {
        let cfg = ChildConfig {
            allocator: Allocator::Jemalloc,
            limit: 128 << 20,
            duration: Duration::from_millis(2500),
            seed: 99,
            threads: 3,
            demand: Some(1 << 30),
        };
        assert_eq!(ChildConfig::parse(&cfg.to_args()), Ok(cfg));
        assert!(ChildConfig::parse(&["--limit".into()]).is_err());
        assert!(ChildConfig::parse(&[]).is_err());
    }

    #[test]
    fn every_scenario_is_found_by_name() {
        for s in ALL {
            assert!(std::ptr::eq(find(s.name).unwrap(), s));
        }
        assert!(find("nosuch").is_none());
    }
}
