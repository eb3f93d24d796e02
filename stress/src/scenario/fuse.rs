//! `fuse`: a FUSE filesystem in C (`stress/fuse/`, libfuse3) linked against
//! shrinkalloc, serving a backing directory through a block cache that a
//! `SA_NEEDS_FS` shrinker shrinks, while files are copied through it inside
//! a memory cgroup whose limit is half of what the cache would hold.
//!
//! The harness builds the daemon before the first run, outside any cgroup
//! (its sources are built into this binary; `prepare`). The driver mounts
//! it in the run's work directory and runs `--threads` writers, each writing
//! files of 1-4 MiB of a known pattern through the mount in chunks of random
//! size (every fourth file fsync'ed, every eighth also copied by `cp`, a
//! process of its own), reading back a random file of its own and checking
//! every byte, and keeping a window of live files: together twice the limit,
//! so that an unbounded cache would outgrow it. At the end it checks every
//! live file through the mount, unmounts (the daemon writes back every dirty
//! block and exits) and checks every file again in the backing directory.
//!
//! Expected: under shrinkalloc the daemon survives (its shrinker frees clean
//! blocks and queues dirty ones for write-back on the daemon's work queue),
//! every byte is right and nothing is OOM-killed; without its shrinker
//! (`shrinkalloc-noshrink`) an allocation is refused at the hard limit and
//! the filesystem fails a request with ENOMEM; with glibc, jemalloc or
//! mimalloc nothing bounds the cache and the daemon is OOM-killed. A hang
//! ends the child through its watchdog; whatever way a run ends, the
//! harness unmounts what is left (`cleanup`), as a killed daemon leaves its
//! mount behind.
//!
//! Status fields: the driver's `files` (written), `verified` (files
//! checked through the mount), `copies`, `fsyncs`, `written` and `read`
//! (bytes) and, at the end, `backing_verified`; the daemon's counters
//! (`blocks`, `cached_bytes`, `cache_peak`, `dirty`, `hits`, `misses`,
//! `uncached`, `evicted`, `self_evicted`, `wb_blocks`, `wb_not_nofs`,
//! `scans_nofs`, `scans_in_lock_holder`, ...: see `stress/fuse/cache.h`)
//! and, under shrinkalloc, its statistics: `in_use`, `committed`,
//! `reclaim_passes`, `direct_passes`, `failed_charges`, `hard_limit`,
//! `soft_limit`, and `fs_skipped` (times reclaim in a NOFS lock holder
//! skipped the shrinker).

use std::collections::VecDeque;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::daemon::{self, Daemon, Figures};
use super::{corrupt, ChildConfig, Column, Driver, Env, Expect, Launch, Run, Scenario, Unit, WORKDIR_ENV};
use crate::allocator;
use crate::cgroup;
use crate::status;
use crate::verify::{self, mix, Rng};

/// The `fuse` scenario.
pub static SCENARIO: Scenario = Scenario {
    name: "fuse",
    about: "a FUSE filesystem in C whose block cache is behind an FS shrinker, its lock holders in NOFS \
            scopes, write-back on a work queue; files copied through it and checked",
    launch: Launch::Driver(&DRIVER),
    default_allocators: &allocator::ALL,
    default_duration: Duration::from_secs(15),
    expect: |a| if a.registers_shrinkers() { Expect::Survives } else { Expect::DiesAtLimit },
    traced: false,
};

static DRIVER: Driver = Driver {
    prepare,
    main,
    cleanup: unmount_all,
    columns: &[
        Column { field: "verified", header: "files checked", unit: Unit::Count },
        Column { field: "written", header: "written", unit: Unit::Bytes },
        Column { field: "cache_peak", header: "cache peak", unit: Unit::Bytes },
        Column { field: "evicted", header: "blocks evicted", unit: Unit::Count },
        Column { field: "wb_blocks", header: "written back", unit: Unit::Count },
        Column { field: "uncached", header: "uncached", unit: Unit::Count },
        Column { field: "fs_skipped", header: "FS skipped (NOFS)", unit: Unit::Count },
    ],
};

/// The variable that tells the driver where the built daemon is.
const FUSED_ENV: &str = "SHRINKALLOC_STRESS_FUSED";

/// The daemon's sources, built into this binary.
const SOURCES: [(&str, &str); 4] = [
    ("sa_fused.c", include_str!("../../fuse/sa_fused.c")),
    ("cache.c", include_str!("../../fuse/cache.c")),
    ("cache.h", include_str!("../../fuse/cache.h")),
    ("shrinkalloc.h", include_str!("../../../include/shrinkalloc.h")),
];

const MIN_FILE: usize = 1 << 20;
const MAX_FILE: usize = 4 << 20;
const MAX_CHUNK: usize = 256 << 10;
/// The live files of all writers together, as a multiple of the limit.
const WINDOW_TIMES_LIMIT: usize = 2;

const DRIVER_FIELDS: [&str; 7] = ["files", "verified", "copies", "fsyncs", "written", "read", "backing_verified"];
const CACHE_FIELDS: [&str; 19] = [
    "blocks",
    "cached_bytes",
    "dirty",
    "hits",
    "misses",
    "uncached",
    "evicted",
    "self_evicted",
    "discarded",
    "alloc_failed",
    "wb_items",
    "wb_blocks",
    "wb_not_nofs",
    "wb_submit_failed",
    "wb_errors",
    "throttled",
    "scans",
    "scans_nofs",
    "scans_in_lock_holder",
];

// ---- the harness side: build, clean up ----

fn prepare() -> Result<Env, String> {
    sweep_stale();
    daemon::require("cc", "gcc")?;
    daemon::require("fusermount3", "fuse3")?;
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: this kernel or container has no FUSE".into());
    }
    let lib = daemon::library()?;
    let fused = build_daemon(&lib)?;
    Ok(vec![
        (daemon::LIB_ENV.to_string(), lib.display().to_string()),
        (FUSED_ENV.to_string(), fused.display().to_string()),
    ])
}

/// `pkg-config <what> fuse3`, split into arguments.
fn pkg_config(what: &str) -> Result<Vec<String>, String> {
    let out = Command::new("pkg-config").args([what, "fuse3"]).output();
    match out {
        Ok(o) if o.status.success() => {
            Ok(String::from_utf8_lossy(&o.stdout).split_whitespace().map(Into::into).collect())
        }
        _ => Err("`pkg-config fuse3` fails: apt-get install pkg-config fuse3 libfuse3-dev (CI: .ci/run must \
                  install them)"
            .into()),
    }
}

/// Compiles the daemon next to `lib` (see [`daemon::build`]).
fn build_daemon(lib: &Path) -> Result<PathBuf, String> {
    let (cflags, libs) = (pkg_config("--cflags")?, pkg_config("--libs")?);
    daemon::build(lib, "sa-fused", &SOURCES, &cflags, &libs)
}

/// The mount points under `dir`, deepest first, from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Unmounts everything under `dir`; lazily when it is busy or its daemon
/// is gone (a stale mount).
fn unmount_all(dir: &Path) -> Result<(), String> {
    for mnt in mounts_under(dir) {
        let path = CString::new(mnt.as_os_str().as_bytes()).map_err(|_| "a mount path with a NUL")?;
        // SAFETY: `path` is a NUL-terminated string that outlives both calls.
        let gone =
            unsafe { libc::umount2(path.as_ptr(), 0) == 0 || libc::umount2(path.as_ptr(), libc::MNT_DETACH) == 0 };
        if !gone {
            return Err(format!("cannot unmount {}: {}", mnt.display(), io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Removes the work directories of `fuse` runs whose harness is gone,
/// unmounting what they left.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(cgroup::PREFIX).filter(|r| r.contains(".fuse.")) else { continue };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        // SAFETY: signal 0 only checks that `pid` exists; nothing is sent.
        let alive =
            unsafe { libc::kill(pid, 0) } == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !alive && unmount_all(&entry.path()).is_ok() && fs::remove_dir_all(entry.path()).is_ok() {
            eprintln!("shrinkalloc-stress: removed a stale FUSE work directory {}", entry.path().display());
        }
    }
}

// ---- the driver ----

fn main(cfg: &ChildConfig) -> i32 {
    let (Ok(fused), Ok(dir)) = (std::env::var(FUSED_ENV), std::env::var(WORKDIR_ENV)) else {
        status::print_error(&format!("the harness gives this driver {FUSED_ENV} and {WORKDIR_ENV}"));
        return super::EXIT_USAGE;
    };
    let dir = PathBuf::from(dir);
    let (backing, mnt) = (dir.join("backing"), dir.join("mnt"));
    if let Err(e) = fs::create_dir_all(&backing).and_then(|()| fs::create_dir_all(&mnt)) {
        status::print_error(&format!("cannot make {}: {e}", dir.display()));
        return 1;
    }
    if let Some(kind) = memory_backed(&backing) {
        status::print_error(&format!(
            "{} is on {kind}: the backing files would be charged to the cgroup as memory; set TMPDIR to a \
             directory on a disk",
            backing.display()
        ));
        return 1;
    }
    let mut names = DRIVER_FIELDS.to_vec();
    names.extend(CACHE_FIELDS);
    names.push("cache_peak");
    if cfg.allocator.is_shrinkalloc() {
        names.extend(daemon::SA_FIELDS);
    }
    let figures = Arc::new(Figures::new(names));
    let state = Arc::new(DaemonState::default());
    let mut fused = match start_daemon(cfg, Path::new(&fused), &backing, &mnt, &figures, &state) {
        Ok(c) => c,
        Err(e) => {
            status::print_error(&format!("cannot mount sa-fused: {e}"));
            let _ = unmount_all(&dir);
            return 1;
        }
    };
    let run = daemon::driver_run(cfg);
    let fields = || figures.fields();
    let mut ended = Err(Failure::Io(io::Error::other("the workload did not run")));
    run.supervise(&fields, || ended = drive(cfg, &run, &figures, &state, &mut fused, &backing, &mnt));
    let _ = unmount_all(&dir);
    match ended {
        Ok(()) => {
            run.print(true, &fields);
            0
        }
        Err(failure) => report_failure(&run, &figures, &mut fused, failure),
    }
}

/// The filesystem type of `dir` when it keeps its files in memory.
fn memory_backed(dir: &Path) -> Option<&'static str> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero `statfs` is a valid value for the kernel to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` a valid, writable statfs.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    /// `RAMFS_MAGIC` of `linux/magic.h` (not in the libc crate).
    const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;
    match st.f_type {
        libc::TMPFS_MAGIC => Some("tmpfs"),
        RAMFS_MAGIC => Some("ramfs"),
        _ => None,
    }
}

/// What the daemon said: mounted, finished.
#[derive(Default)]
struct DaemonState {
    ready: Mutex<bool>,
    mounted: Condvar,
    done: AtomicBool,
}

fn start_daemon(
    cfg: &ChildConfig,
    fused: &Path,
    backing: &Path,
    mnt: &Path,
    figures: &Arc<Figures>,
    state: &Arc<DaemonState>,
) -> io::Result<Daemon> {
    let mut cmd = Command::new(fused);
    cmd.arg(backing).arg(mnt);
    cmd.args(["--threads", &(2 * cfg.threads).to_string()]);
    cmd.args(["--dirty-kib", &(cfg.limit / 16 / 1024).max(1024).to_string()]);
    cmd.env_remove("LD_PRELOAD");
    if !cfg.allocator.registers_shrinkers() {
        cmd.arg("--no-shrinker");
    }
    // Reclaim lockdep's pthread interposer goes first, when a test asks.
    let lockdep = std::env::var("SHRINKALLOC_STRESS_LOCKDEP_PRELOAD").ok();
    let preload: Vec<String> = [lockdep, daemon::malloc_preload(cfg.allocator, None)].into_iter().flatten().collect();
    if !preload.is_empty() {
        cmd.env("LD_PRELOAD", preload.join(":"));
    }
    let (f, s) = (Arc::clone(figures), Arc::clone(state));
    let mut daemon =
        Daemon::start(&mut cmd, move |line| daemon_line(line, &f, &s), |line| eprintln!("sa-fused: {line}"))?;
    let ready = state.ready.lock().unwrap_or_else(|e| e.into_inner());
    let (ready, _) =
        state.mounted.wait_timeout_while(ready, Duration::from_secs(10), |r| !*r).unwrap_or_else(|e| e.into_inner());
    if !*ready {
        drop(ready);
        daemon.kill();
        return Err(io::Error::other("sa-fused did not mount within 10 s"));
    }
    Ok(daemon)
}

/// Takes in one line of the daemon's stdout.
fn daemon_line(line: &str, f: &Figures, state: &DaemonState) {
    match line.split_once(' ').unwrap_or((line, "")) {
        ("ready", _) => {
            *state.ready.lock().unwrap_or_else(|e| e.into_inner()) = true;
            state.mounted.notify_all();
        }
        ("done", _) => state.done.store(true, Ordering::Relaxed),
        ("cache", rest) => {
            for (k, v) in rest.split_whitespace().filter_map(|kv| kv.split_once('=')) {
                if let (Some(name), Ok(v)) = (CACHE_FIELDS.iter().find(|n| **n == k), v.parse()) {
                    f.set(name, v);
                }
            }
            f.raise("cache_peak", f.get("cached_bytes"));
        }
        ("sa", json) => daemon::take_sa_stats(json, f),
        _ => eprintln!("sa-fused: {line}"),
    }
}

/// Why a run did not complete.
enum Failure {
    /// The workload met an I/O error (the daemon died, or refused).
    Io(io::Error),
    /// The daemon ended badly at unmount.
    Daemon(std::process::ExitStatus),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// The workload, the final checks through the mount, the unmount and the
/// check of the backing files.
fn drive(
    cfg: &ChildConfig,
    run: &Run,
    f: &Figures,
    state: &DaemonState,
    fused: &mut Daemon,
    backing: &Path,
    mnt: &Path,
) -> Result<(), Failure> {
    let window = (WINDOW_TIMES_LIMIT * cfg.limit / ((MIN_FILE + MAX_FILE) / 2) / cfg.threads).max(2);
    let failed = AtomicBool::new(false);
    let live: Vec<io::Result<VecDeque<(u64, usize)>>> = thread::scope(|s| {
        let writers: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let w = Writer { seed: cfg.seed, mnt, run, f, failed: &failed, thread: t as u64, threads: cfg.threads };
                s.spawn(move || w.work(window))
            })
            .collect();
        writers.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("a writer panicked")))).collect()
    });
    let live: Vec<(u64, usize)> = live.into_iter().collect::<io::Result<Vec<_>>>()?.into_iter().flatten().collect();
    unmount(mnt)?;
    let status = fused
        .wait_timeout(Duration::from_secs(20))
        .ok_or_else(|| io::Error::other("sa-fused did not exit within 20 s of its unmount"))?;
    if !status.success() || !state.done.load(Ordering::Relaxed) {
        return Err(Failure::Daemon(status));
    }
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut rng = Rng::new(cfg.seed, u64::MAX);
    for &(id, len) in &live {
        check_file(&backing.join(file_name(id)), file_tag(cfg.seed, id), len, &mut rng, &mut buf, run, None)?;
        f.add("backing_verified", 1);
    }
    Ok(())
}

/// One writer thread's part of the workload.
struct Writer<'a> {
    seed: u64,
    mnt: &'a Path,
    run: &'a Run,
    f: &'a Figures,
    failed: &'a AtomicBool,
    thread: u64,
    threads: usize,
}

impl Writer<'_> {
    /// Writes, checks, copies and removes files until the run's end (or
    /// another writer's failure); then checks the files it keeps, which it
    /// returns as (id, length).
    fn work(&self, window: usize) -> io::Result<VecDeque<(u64, usize)>> {
        let r = self.work_until_done(window);
        if r.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        r
    }

    fn work_until_done(&self, window: usize) -> io::Result<VecDeque<(u64, usize)>> {
        let mut rng = Rng::new(self.seed, self.thread);
        let mut buf = vec![0u8; MAX_CHUNK];
        let mut live = VecDeque::new();
        let mut id = self.thread;
        while !self.run.done() && !self.failed.load(Ordering::Relaxed) {
            let len = file_len(self.seed, id);
            self.write(id, len, &mut rng, &mut buf)?;
            live.push_back((id, len));
            if id % 8 == 3 {
                self.copy(id, len, &mut rng, &mut buf)?;
            }
            let (pick, pick_len) = live[rng.below(live.len() as u64) as usize];
            self.check(&self.path(pick), pick, pick_len, &mut rng, &mut buf)?;
            if live.len() > window {
                let (old, old_len) = live.pop_front().expect("longer than the window");
                self.check(&self.path(old), old, old_len, &mut rng, &mut buf)?;
                fs::remove_file(self.path(old))?;
            }
            id += self.threads as u64;
        }
        for &(id, len) in &live {
            if self.failed.load(Ordering::Relaxed) {
                break;
            }
            self.check(&self.path(id), id, len, &mut rng, &mut buf)?;
        }
        Ok(live)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.mnt.join(file_name(id))
    }

    /// Writes file `id` in chunks of random size; every fourth is fsync'ed.
    fn write(&self, id: u64, len: usize, rng: &mut Rng, buf: &mut [u8]) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(self.path(id))?;
        let tag = file_tag(self.seed, id);
        let mut at = 0;
        while at < len {
            let n = rng.range(1, MAX_CHUNK).min(len - at);
            verify::stamp_at(&mut buf[..n], tag, at);
            file.write_all(&buf[..n])?;
            at += n;
            self.f.add("written", n as u64);
            self.run.count(1);
        }
        if id % 4 == 1 {
            file.sync_all()?;
            self.f.add("fsyncs", 1);
        }
        self.f.add("files", 1);
        Ok(())
    }

    /// Copies file `id` with `cp` (another process), checks the copy,
    /// removes it.
    fn copy(&self, id: u64, len: usize, rng: &mut Rng, buf: &mut [u8]) -> io::Result<()> {
        let copy = self.mnt.join(format!("{}.copy", file_name(id)));
        let status = Command::new("cp").arg(self.path(id)).arg(&copy).status()?;
        if !status.success() {
            return Err(io::Error::other(format!("cp of {} failed ({})", file_name(id), daemon::describe(status))));
        }
        let copied = fs::metadata(&copy)?.len();
        if copied != len as u64 {
            let now = fs::metadata(self.path(id))?.len();
            corrupt(format_args!(
                "cp copied {copied} of the {len} bytes of {} (whose size the mount reports as {now} now)",
                file_name(id)
            ));
        }
        self.check(&copy, id, len, rng, buf)?;
        fs::remove_file(&copy)?;
        self.f.add("copies", 1);
        Ok(())
    }

    fn check(&self, path: &Path, id: u64, len: usize, rng: &mut Rng, buf: &mut [u8]) -> io::Result<()> {
        check_file(path, file_tag(self.seed, id), len, rng, buf, self.run, Some(self.f))?;
        self.f.add("verified", 1);
        Ok(())
    }
}

/// Reads `path` in chunks of random size and checks that it holds exactly
/// `len` bytes of `tag`'s pattern; a wrong byte ends the child as corrupt.
fn check_file(
    path: &Path,
    tag: u64,
    len: usize,
    rng: &mut Rng,
    buf: &mut [u8],
    run: &Run,
    f: Option<&Figures>,
) -> io::Result<()> {
    let mut file = File::open(path)?;
    let mut at = 0;
    loop {
        let want = rng.range(1, buf.len());
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        if at + n > len {
            corrupt(format_args!("{} is longer than the {len} bytes written", path.display()));
        }
        if let Err(m) = verify::check_at(&buf[..n], tag, at) {
            corrupt(format_args!("{} differs at byte {}: {m}", path.display(), at + m.offset));
        }
        at += n;
        if let Some(f) = f {
            f.add("read", n as u64);
        }
        run.count(1);
    }
    if at != len {
        corrupt(format_args!("{} has {at} bytes, {len} were written", path.display()));
    }
    Ok(())
}

fn file_name(id: u64) -> String {
    format!("f{id:07}.dat")
}

fn file_tag(seed: u64, id: u64) -> u64 {
    mix(seed ^ mix(id ^ 0xf11e))
}

/// An odd length of 1-4 MiB, so that the last block is partly used.
fn file_len(seed: u64, id: u64) -> usize {
    (MIN_FILE + (mix(seed.rotate_left(7) ^ id) % (MAX_FILE - MIN_FILE) as u64) as usize) | 1
}

/// `fusermount3 -u`, retried a few times while the mount is busy.
fn unmount(mnt: &Path) -> io::Result<()> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("fusermount3").arg("-u").arg(mnt).output()?;
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > until {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(io::Error::other(format!("fusermount3 -u {} failed: {why}", mnt.display())));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Reports a run that did not complete and ends the driver accordingly: as
/// the daemon ended if a signal ended it (an OOM kill, a crash); with an
/// abort read as a refused allocation if the filesystem refused a request
/// for lack of memory (ENOMEM: its hard limit held); else as an error.
fn report_failure(run: &Run, f: &Figures, fused: &mut Daemon, failure: Failure) -> i32 {
    let fields = || f.fields();
    let (error, status) = match failure {
        Failure::Daemon(status) => (None, Some(status)),
        Failure::Io(e) => (Some(e), fused.wait_timeout(Duration::from_secs(3))),
    };
    run.print(false, &fields);
    let seen = error.as_ref().map_or(String::new(), |e| format!("; the workload saw: {e}"));
    let how = status.map_or("still running".into(), daemon::describe);
    eprintln!("shrinkalloc-stress child: sa-fused {how}{seen}");
    if let Some(status) = status.filter(|s| s.signal().is_some()) {
        daemon::end_like(status);
    }
    fused.kill();
    if error.as_ref().and_then(io::Error::raw_os_error) == Some(libc::ENOMEM) {
        eprintln!(
            "shrinkalloc-stress child: sa-fused refused a request with ENOMEM: memory allocation of a request \
             failed at its hard limit"
        );
        std::process::abort();
    }
    status::print_error(&format!("sa-fused failed ({how}){seen}"));
    1
}
