//! The harness side of a run: start a child under one allocator inside its
//! limit, watch it, and say how it ended.
//!
//! The limit is a memory cgroup made for the run ([`Limiter::Cgroup`]), or,
//! where none can be made, shrinkalloc's own hard limit plus the harness
//! killing any child whose resident set passes the limit, standing in for
//! the kernel's OOM killer ([`Limiter::Fallback`], announced loudly).
//!
//! Invariant: a run owns its child and its cgroup (and, for a driver
//! scenario, its work directory); whatever way it ends (exit, OOM kill,
//! deadline, Ctrl-C, an error of the harness) the child is dead and reaped,
//! the group removed and the driver's cleanup done before the next run
//! starts, and a group or mount that cannot be removed is reported as an
//! error of the run.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use crate::alloc_switch::{self, Backend};
use crate::allocator::{self, Allocator};
use crate::cgroup::{self, Cgroup, Hierarchy};
use crate::interrupt;
use crate::oracle::{self, Replay};
use crate::report::Progress;
use crate::scenario::{self, ChildConfig, Driver, Expect, Launch, Scenario};
use crate::status::{self, Fields, Line};
use crate::trace;

/// How often the harness samples usage and redraws progress.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long past its duration a child may run (final checks, the child's
/// own hang watchdog) before the harness kills it as hung.
pub const GRACE: Duration = Duration::from_secs(25);
/// Stderr lines of a child kept for the report.
const STDERR_TAIL: usize = 8;

/// How runs are held to their limit.
pub enum Limiter {
    /// A memory cgroup per run.
    Cgroup(Hierarchy),
    /// No cgroup could be made (the reason): shrinkalloc's hard limit and
    /// an emulated OOM kill.
    Fallback(String),
}

impl Limiter {
    /// Finds out whether memory cgroups can be made here, by making and
    /// removing one; also removes groups that killed harnesses left.
    pub fn probe() -> Limiter {
        let hierarchy = match Hierarchy::find() {
            Ok(h) => h,
            Err(e) => return Limiter::Fallback(e),
        };
        for stale in hierarchy.sweep_stale() {
            eprintln!("shrinkalloc-stress: removed a stale cgroup {}", stale.display());
        }
        let name = format!("{}{}.probe", cgroup::PREFIX, std::process::id());
        match hierarchy.create(&name, 64 << 20).and_then(|mut g| g.remove()) {
            Ok(()) => Limiter::Cgroup(hierarchy),
            Err(e) => Limiter::Fallback(format!("cannot make a memory cgroup: {e}")),
        }
    }

    /// One line saying how the limit is enforced.
    pub fn describe(&self) -> String {
        match self {
            Limiter::Cgroup(h) => format!("a memory cgroup per run ({})", h.version().name()),
            Limiter::Fallback(_) => "NO CGROUP: shrinkalloc's own hard limit, and an emulated OOM kill \
                                     (the harness SIGKILLs a child whose RSS passes the limit)"
                .to_string(),
        }
    }

    /// The loud explanation printed when there is no cgroup.
    pub fn fallback_banner(reason: &str) -> String {
        let rule = "!".repeat(100);
        format!(
            "{rule}\n!! shrinkalloc-stress: NO MEMORY CGROUP: {reason}\n\
             !! Falling back: shrinkalloc children get their own hard limit (SHRINKALLOC_HARD_LIMIT), and the\n\
             !! harness SIGKILLs any child whose resident set passes the limit, standing in for the OOM killer.\n\
             !! For the real thing run as root on a machine with the memory controller (v1 or v2).\n{rule}"
        )
    }
}

/// What to run: one scenario, its settings, the allocators in order.
pub struct Plan {
    /// The scenario.
    pub scenario: &'static Scenario,
    /// The memory limit per run, in bytes.
    pub limit: usize,
    /// How long each run lasts.
    pub duration: Duration,
    /// The seed every run gets.
    pub seed: u64,
    /// Worker threads per child.
    pub threads: usize,
    /// The allocators, in order.
    pub allocators: Vec<Allocator>,
    /// The workload's demand (`--demand`), `None` for the scenario's default.
    pub demand: Option<usize>,
    /// The soft line set on each run's group (`--high`), if any.
    pub high: Option<usize>,
    /// Where the results go; a traced scenario's traces are written there
    /// while the children run.
    pub out: PathBuf,
}

#[cfg(test)]
impl Plan {
    /// The demo's plan, for unit tests of what reads one.
    pub fn for_tests() -> Plan {
        Plan {
            scenario: &scenario::cache::SCENARIO,
            limit: 256 << 20,
            duration: Duration::from_secs(4),
            seed: 1,
            threads: 4,
            allocators: vec![Allocator::ShrinkAlloc],
            demand: None,
            high: None,
            out: PathBuf::from("/nonexistent"),
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Ran its whole duration and passed its final checks.
    Survived,
    /// Killed by the OOM killer (`emulated`: by the harness, without a cgroup).
    OomKilled {
        /// Whether the harness stood in for the kernel.
        emulated: bool,
    },
    /// An allocation was refused at shrinkalloc's hard limit and the child
    /// aborted, as Rust programs do.
    AllocFailed,
    /// A content check failed (the child's message).
    Corrupt(String),
    /// Stopped making progress (the child's watchdog or the harness's deadline).
    Hung(String),
    /// Ended any other way (how).
    Crashed(String),
    /// Stopped by Ctrl-C.
    Interrupted,
    /// Not run (why).
    Skipped(String),
    /// The harness could not run it (why).
    HarnessError(String),
}

impl Outcome {
    /// A short label for tables.
    pub fn label(&self) -> String {
        match self {
            Outcome::Survived => "survived".into(),
            Outcome::OomKilled { emulated: false } => "OOM-killed".into(),
            Outcome::OomKilled { emulated: true } => "OOM-killed (emulated)".into(),
            Outcome::AllocFailed => "allocation failed".into(),
            Outcome::Corrupt(_) => "CORRUPTION".into(),
            Outcome::Hung(_) => "HUNG".into(),
            Outcome::Crashed(how) => format!("crashed ({how})"),
            Outcome::Interrupted => "interrupted".into(),
            Outcome::Skipped(_) => "skipped".into(),
            Outcome::HarnessError(_) => "harness error".into(),
        }
    }

    /// A machine-readable name for the results CSV.
    pub fn key(&self) -> &'static str {
        match self {
            Outcome::Survived => "survived",
            Outcome::OomKilled { .. } => "oom_killed",
            Outcome::AllocFailed => "alloc_failed",
            Outcome::Corrupt(_) => "corrupt",
            Outcome::Hung(_) => "hung",
            Outcome::Crashed(_) => "crashed",
            Outcome::Interrupted => "interrupted",
            Outcome::Skipped(_) => "skipped",
            Outcome::HarnessError(_) => "harness_error",
        }
    }

    /// Whether it meets `expect`; `None` when the run did not happen.
    pub fn meets(&self, expect: Expect) -> Option<bool> {
        match (self, expect) {
            (Outcome::Skipped(_) | Outcome::Interrupted, _) => None,
            (Outcome::Survived, Expect::Survives) => Some(true),
            (Outcome::OomKilled { .. } | Outcome::AllocFailed, Expect::DiesAtLimit) => Some(true),
            _ => Some(false),
        }
    }
}

/// One point of a run's usage over time.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds since the child started.
    pub t: f64,
    /// Bytes charged to the cgroup (the child's RSS without one).
    pub usage: usize,
    /// The child's last status line at that time.
    pub fields: Fields,
}

/// What the oracle made of a run's trace.
#[derive(Clone, Debug)]
pub struct Measure {
    /// The replay at the oracle's budget.
    pub replay: Replay,
    /// The least budget at which an exact LRU gets the run's hits.
    pub equivalent: Option<usize>,
    /// The replay's running totals at the end of each of
    /// [`oracle::SERIES_WINDOWS`] equal slices of the trace.
    pub series: Vec<Replay>,
}

/// Everything known about one finished run.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The allocator.
    pub allocator: Allocator,
    /// How it ended.
    pub outcome: Outcome,
    /// What was expected of it.
    pub expect: Expect,
    /// From start to exit.
    pub wall: Duration,
    /// The most memory charged at any time.
    pub peak: usize,
    /// OOM kills the cgroup counted.
    pub oom_kills: u64,
    /// Times the cgroup's usage hit its limit.
    pub limit_hits: u64,
    /// How the process ended (`exit 0`, `signal 9`), empty if not run.
    pub exit: String,
    /// The final line, or else the last status line.
    pub last: Fields,
    /// Whether the child printed its final line.
    pub finished: bool,
    /// Usage over time.
    pub samples: Vec<Sample>,
    /// The cgroup the run used, removed by now unless `cleanup_error`.
    pub cgroup: Option<PathBuf>,
    /// Why the cgroup could not be removed.
    pub cleanup_error: Option<String>,
    /// The last lines the child wrote to stderr.
    pub stderr_tail: Vec<String>,
    /// A traced scenario's trace measured by the oracle, or why not.
    pub replay: Option<Result<Measure, String>>,
}

impl RunResult {
    /// A run that did not happen, or whose result is only `outcome`.
    pub fn not_run(allocator: Allocator, expect: Expect, outcome: Outcome) -> Self {
        RunResult {
            allocator,
            outcome,
            expect,
            wall: Duration::ZERO,
            peak: 0,
            oom_kills: 0,
            limit_hits: 0,
            exit: String::new(),
            last: Fields::default(),
            finished: false,
            samples: Vec::new(),
            cgroup: None,
            cleanup_error: None,
            stderr_tail: Vec::new(),
            replay: None,
        }
    }

    /// The oracle's replay of a run whose trace could be read.
    pub fn oracle(&self) -> Option<&Replay> {
        self.replay.as_ref().and_then(|r| r.as_ref().ok()).map(|m| &m.replay)
    }

    /// The budget of the exact LRU that would have got this run's hits
    /// (`None`: more than twice the limit, or no trace).
    pub fn equivalent_budget(&self) -> Option<usize> {
        self.replay.as_ref().and_then(|r| r.as_ref().ok()).and_then(|m| m.equivalent)
    }

    /// The usage band after warm-up: the least and the most usage sampled
    /// from [`RunResult::band_from`] to the end of the run's `duration`
    /// (what a paced workload spans; not the checks and the freeing after
    /// it).
    pub fn band(&self, duration: Duration) -> Option<(usize, usize)> {
        let (from, end) = (self.band_from(duration), duration.as_secs_f64());
        let after = self.samples.iter().filter(|s| s.t >= from && s.t <= end).map(|s| s.usage);
        after.fold(None, |b, u| Some(b.map_or((u, u), |(lo, hi): (usize, usize)| (lo.min(u), hi.max(u)))))
    }

    /// Where warm-up ends, in seconds: a quarter into the run's `duration`,
    /// or later while the cache is still filling, at the first sample whose
    /// usage reaches 90% of the run's highest; never past half the
    /// duration, so that usage that creeps up all run long still widens the
    /// band. (A run whose demand is twice its limit, spread evenly over the
    /// duration, fills its cache only 40% of the way in: its first quarter
    /// is not its warm-up.) A sawtooth's first peak is reached early, so
    /// every later drop stays in the window.
    pub fn band_from(&self, duration: Duration) -> f64 {
        let end = duration.as_secs_f64();
        let peak = self.samples.iter().filter(|s| s.t <= end).map(|s| s.usage).max().unwrap_or(0);
        let filled = self.samples.iter().find(|s| s.usage as f64 >= 0.9 * peak as f64).map_or(0.0, |s| s.t);
        filled.clamp(end / 4.0, end / 2.0)
    }

    /// Operations per second over the child's run (until it died).
    pub fn ops_per_sec(&self) -> Option<f64> {
        let ops = self.last.get("ops")?;
        let ms = self.last.get("t_ms")?.max(1);
        Some(ops as f64 * 1000.0 / ms as f64)
    }

    /// shrinkalloc's hard and soft limits in force, as the child reported.
    pub fn limits_in_force(&self) -> Option<(usize, usize)> {
        let hard = self.last.get("hard_limit").filter(|&h| h > 0)?;
        Some((hard as usize, self.last.get("soft_limit").unwrap_or(0) as usize))
    }

    /// Whether this run is a failure of the harness's checks: an outcome
    /// other than expected, or a cgroup left behind.
    pub fn failed(&self) -> bool {
        self.outcome.meets(self.expect) == Some(false)
            || self.cleanup_error.is_some()
            || matches!(self.outcome, Outcome::HarnessError(_))
    }
}

/// Runs every allocator of `plan` in turn; stops early on Ctrl-C.
pub fn run_plan(plan: &Plan, limiter: &Limiter, progress: &mut Progress) -> Vec<RunResult> {
    let prepared = match plan.scenario.launch {
        Launch::InProcess(_) => Ok(Vec::new()),
        Launch::Driver(driver) => (driver.prepare)(),
    };
    if let Err(why) = &prepared {
        eprintln!("shrinkalloc-stress: ERROR: cannot run {}: {why}", plan.scenario.name);
    }
    let mut results = Vec::new();
    for &a in &plan.allocators {
        if interrupt::interrupted() {
            break;
        }
        let expect = (plan.scenario.expect)(a);
        let result = match (a.available(), &prepared) {
            (Err(why), _) => {
                eprintln!("!!! shrinkalloc-stress: SKIPPING {}: {why}", a.name());
                RunResult::not_run(a, expect, Outcome::Skipped(why))
            }
            (Ok(()), Err(why)) => RunResult::not_run(a, expect, Outcome::HarnessError(why.clone())),
            (Ok(()), Ok(env)) => run_one(plan, limiter, a, env, progress),
        };
        progress.done(&result, plan.limit);
        results.push(result);
    }
    results
}

/// What the child's reader threads send.
enum Msg {
    Out(String),
    Err(String),
}

/// Kills and reaps the child if the run is left early.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The state of a run while its child lives.
struct Watch {
    started: Instant,
    last: Fields,
    finished: bool,
    error: Option<String>,
    stderr_tail: Vec<String>,
    samples: Vec<Sample>,
    peak: usize,
    /// From start to exit.
    wall: Duration,
    /// Samples taken before the final line arrived; later ones show the
    /// child freeing everything on its way out.
    before_final: Option<usize>,
}

impl Watch {
    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Out(line) => match status::parse(&line) {
                Line::Status(f) => self.last = f,
                Line::Final(f) => {
                    self.last = f;
                    self.finished = true;
                    self.before_final = Some(self.samples.len());
                }
                Line::Error(e) => self.error = Some(e),
                Line::Other(text) => self.keep_stderr(text),
            },
            Msg::Err(line) => self.keep_stderr(line),
        }
    }

    fn keep_stderr(&mut self, line: String) {
        if self.stderr_tail.len() == STDERR_TAIL {
            self.stderr_tail.remove(0);
        }
        self.stderr_tail.push(line);
    }

    fn drain(&mut self, rx: &Receiver<Msg>) {
        while let Ok(msg) = rx.try_recv() {
            self.take(msg);
        }
    }
}

/// The child's command line and environment; `in_cgroup` says whether it
/// will run in a cgroup, where shrinkalloc finds its limits itself; `env`
/// is what a driver scenario's `prepare` returned.
fn child_command(
    plan: &Plan,
    allocator: Allocator,
    in_cgroup: bool,
    env: &[(String, String)],
) -> std::io::Result<Command> {
    let cfg = ChildConfig {
        allocator,
        limit: plan.limit,
        duration: plan.duration,
        seed: plan.seed,
        threads: plan.threads,
        demand: plan.demand,
    };
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("child").arg(plan.scenario.name).args(cfg.to_args());
    for var in allocator::LIMIT_VARS {
        cmd.env_remove(var);
    }
    match plan.scenario.launch {
        Launch::InProcess(_) => {
            cmd.envs(allocator.env());
        }
        Launch::Driver(_) => {
            // The driver is not measured: it starts its daemon under `allocator`.
            cmd.env(alloc_switch::ENV, Backend::System.env_value()).env_remove("LD_PRELOAD");
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if !in_cgroup {
        cmd.envs(allocator::fallback_limit_env(allocator, plan.limit));
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    Ok(cmd)
}

/// Runs one child to its end; see the module invariant.
fn run_one(
    plan: &Plan,
    limiter: &Limiter,
    allocator: Allocator,
    env: &[(String, String)],
    progress: &mut Progress,
) -> RunResult {
    let expect = (plan.scenario.expect)(allocator);
    let fail = |why: String| RunResult::not_run(allocator, expect, Outcome::HarnessError(why));
    let mut group = match limiter {
        Limiter::Cgroup(h) => {
            let name = format!("{}{}.{}.{}", cgroup::PREFIX, std::process::id(), plan.scenario.name, allocator.name());
            match h.create(&name, plan.limit) {
                Ok(g) => match plan.high.map_or(Ok(()), |high| h.set_high(&g, high)) {
                    Ok(()) => Some(g),
                    Err(e) => return fail(e),
                },
                Err(e) => return fail(e),
            }
        }
        Limiter::Fallback(_) => None,
    };
    if let Some(g) = &group {
        eprintln!("shrinkalloc-stress: {} runs in cgroup {}", allocator.name(), g.path().display());
    }
    let mut cmd = match child_command(plan, allocator, group.is_some(), env) {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot find this executable: {e}")),
    };
    let mut workdir = match plan.scenario.launch {
        Launch::InProcess(_) => None,
        Launch::Driver(driver) => match WorkDir::create(plan, allocator, driver) {
            Ok(w) => Some(w),
            Err(e) => return fail(e),
        },
    };
    if let Some(w) = &workdir {
        cmd.env(scenario::WORKDIR_ENV, &w.path);
    }
    let procs = match group.as_ref().map(|g| g.join_on_spawn(&mut cmd)).transpose() {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot open cgroup.procs: {e}")),
    };
    let trace_path = plan.out.join(format!("trace-{}.bin", allocator.name()));
    let tracer = match plan.scenario.traced.then(|| trace::Tracer::start(&mut cmd, &trace_path)).transpose() {
        Ok(t) => t,
        Err(e) => return fail(format!("cannot trace to {}: {e}", trace_path.display())),
    };
    let child = cmd.spawn();
    drop(procs);
    let tracer = tracer.map(trace::Tracer::spawned);
    let mut child = match child {
        Ok(c) => ChildGuard(c),
        Err(e) => return fail(format!("cannot start the child: {e}")),
    };
    let rx = read_lines(&mut child.0);
    let (status, watch, how) = watch_child(plan, &mut child, group.as_ref(), &rx, allocator, progress);
    let mut result = finish(allocator, expect, status, watch, how, group.as_ref());
    result.replay = tracer.map(|t| t.records(&trace_path).map(|records| measure(&records, plan.limit)));
    if let Some(g) = group.as_mut() {
        result.cgroup = Some(g.path().to_path_buf());
        result.cleanup_error = g.remove().err();
    }
    if let Some(Err(e)) = workdir.as_mut().map(WorkDir::remove) {
        result.cleanup_error = Some(result.cleanup_error.map_or(e.clone(), |c| format!("{c}; {e}")));
    }
    result
}

/// The oracle's figures of a run at `limit`: its replay at the oracle's
/// budget, and the LRU budget its hits were worth (to 0.5% of the limit).
fn measure(records: &[trace::Record], limit: usize) -> Measure {
    let budget = limit * oracle::BUDGET_PERCENT / 100;
    let (replay, series) = oracle::replay_series(records, budget, oracle::SERIES_WINDOWS);
    let equivalent = oracle::equivalent_budget(records, replay.hits, 2 * limit, limit / 200);
    Measure { replay, equivalent, series }
}

/// A driver child's work directory: made before the child starts; after the
/// child (and its cgroup) is gone, the driver's `cleanup` runs and the
/// directory is removed, also when the run is left early (on drop).
struct WorkDir {
    path: PathBuf,
    driver: &'static Driver,
    removed: bool,
}

impl WorkDir {
    fn create(plan: &Plan, allocator: Allocator, driver: &'static Driver) -> Result<WorkDir, String> {
        let name = format!("{}{}.{}.{}", cgroup::PREFIX, std::process::id(), plan.scenario.name, allocator.name());
        let mut dir = WorkDir { path: std::env::temp_dir().join(name), driver, removed: false };
        if dir.path.exists() {
            dir.remove()?;
            dir.removed = false;
        }
        std::fs::create_dir(&dir.path).map_err(|e| format!("cannot make {}: {e}", dir.path.display()))?;
        Ok(dir)
    }

    fn remove(&mut self) -> Result<(), String> {
        self.removed = true;
        (self.driver.cleanup)(&self.path)?;
        std::fs::remove_dir_all(&self.path).map_err(|e| format!("cannot remove {}: {e}", self.path.display()))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.removed {
            if let Err(e) = self.remove() {
                eprintln!("shrinkalloc-stress: ERROR: {e}");
            }
        }
    }
}

/// Starts threads that forward the child's stdout and stderr lines.
fn read_lines(child: &mut Child) -> Receiver<Msg> {
    let (tx, rx) = mpsc::channel();
    fn forward<R: Read + Send + 'static>(r: R, tx: mpsc::Sender<Msg>, wrap: fn(String) -> Msg) {
        thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if tx.send(wrap(line)).is_err() {
                    break;
                }
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        forward(out, tx.clone(), Msg::Out);
    }
    if let Some(err) = child.stderr.take() {
        forward(err, tx, Msg::Err);
    }
    rx
}

/// Why the harness itself ended a child.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KilledBy {
    Nobody,
    Interrupt,
    Deadline,
    EmulatedOom,
}

/// Samples and shows the run until the child exits; kills it on Ctrl-C,
/// past its deadline, or (without a cgroup) past the limit.
fn watch_child(
    plan: &Plan,
    child: &mut ChildGuard,
    group: Option<&Cgroup>,
    rx: &Receiver<Msg>,
    allocator: Allocator,
    progress: &mut Progress,
) -> (Option<ExitStatus>, Watch, KilledBy) {
    let mut w = Watch {
        started: Instant::now(),
        last: Fields::default(),
        finished: false,
        error: None,
        stderr_tail: Vec::new(),
        samples: Vec::new(),
        peak: 0,
        wall: Duration::ZERO,
        before_final: None,
    };
    let mut killed = KilledBy::Nobody;
    let pid = child.0.id();
    let status = loop {
        w.drain(rx);
        let t = w.started.elapsed();
        let usage = match group {
            Some(g) => g.usage().unwrap_or(0),
            None => child_rss(pid),
        };
        // A sample taken after the exit shows the group emptying, not the
        // child: keep only those taken while it still ran.
        match child.0.try_wait() {
            Ok(Some(status)) => {
                w.wall = t;
                break Some(status);
            }
            Ok(None) => {}
            Err(_) => break None,
        }
        w.peak = w.peak.max(usage);
        w.samples.push(Sample { t: t.as_secs_f64(), usage, fields: w.last.clone() });
        progress.update(plan, allocator, t, usage, &w.last);
        let reason = if interrupt::interrupted() {
            KilledBy::Interrupt
        } else if t > plan.duration + GRACE {
            KilledBy::Deadline
        } else if group.is_none() && usage > plan.limit {
            KilledBy::EmulatedOom
        } else {
            KilledBy::Nobody
        };
        if reason != KilledBy::Nobody && killed == KilledBy::Nobody {
            killed = reason;
            let _ = child.0.kill();
        }
        thread::sleep(SAMPLE_EVERY);
    };
    // The readers end at the child's EOF; give them a moment to deliver.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(msg) => w.take(msg),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    (status, w, killed)
}

/// The resident set size of the child and its descendants, from
/// `/proc/<pid>/statm` and `/proc/<pid>/task/*/children`.
fn child_rss(pid: u32) -> usize {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: usize = text.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // And the processes it started (a driver's daemon), as a cgroup would count them.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    let children = tasks.filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok());
    let descendants: usize = children
        .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .map(child_rss)
        .sum();
    pages * 4096 + descendants
}

fn finish(
    allocator: Allocator,
    expect: Expect,
    status: Option<ExitStatus>,
    w: Watch,
    killed: KilledBy,
    group: Option<&Cgroup>,
) -> RunResult {
    let oom_kills = group.map_or(0, Cgroup::oom_kills);
    let limit_hits = group.map_or(0, Cgroup::limit_hits);
    let peak = group.and_then(Cgroup::peak).unwrap_or(0).max(w.peak);
    let (code, signal) = (status.and_then(|s| s.code()), status.and_then(|s| s.signal()));
    let exit = match (code, signal) {
        (Some(c), _) => format!("exit {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => "unknown".to_string(),
    };
    let alloc_failed = w.stderr_tail.iter().any(|l| l.contains("memory allocation of"));
    let outcome = match killed {
        KilledBy::Interrupt => Outcome::Interrupted,
        KilledBy::Deadline => Outcome::Hung(format!("still running {} s past its duration", GRACE.as_secs())),
        KilledBy::EmulatedOom => Outcome::OomKilled { emulated: true },
        KilledBy::Nobody => match (code, signal) {
            (Some(0), _) if w.finished => Outcome::Survived,
            (Some(scenario::EXIT_CORRUPT), _) => Outcome::Corrupt(w.error.clone().unwrap_or_default()),
            (Some(scenario::EXIT_HANG), _) => Outcome::Hung(w.error.clone().unwrap_or_default()),
            (_, Some(libc::SIGKILL)) if oom_kills > 0 => Outcome::OomKilled { emulated: false },
            (_, Some(libc::SIGABRT)) if alloc_failed => Outcome::AllocFailed,
            (_, Some(libc::SIGINT)) => Outcome::Interrupted,
            _ => Outcome::Crashed(format!(
                "{exit}{}",
                w.stderr_tail.last().map(|l| format!(": {l}")).unwrap_or_default()
            )),
        },
    };
    let mut samples = w.samples;
    if let Some(n) = w.before_final {
        samples.truncate(n.max(1));
    }
    if matches!(outcome, Outcome::OomKilled { .. } | Outcome::AllocFailed | Outcome::Crashed(_)) {
        // A killed or aborted child is torn down over a sample or two: those
        // show its memory going away, not the child.
        while samples.len() >= 2 && samples[samples.len() - 1].usage < samples[samples.len() - 2].usage {
            samples.pop();
        }
    }
    RunResult {
        allocator,
        outcome,
        expect,
        wall: w.wall,
        peak,
        oom_kills,
        limit_hits,
        exit,
        last: w.last,
        finished: w.finished,
        samples,
        cgroup: None,
        cleanup_error: None,
        stderr_tail: w.stderr_tail,
        replay: None,
    }
}
