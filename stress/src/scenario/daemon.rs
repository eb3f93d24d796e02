//! What the driver scenarios (`preload`, `fuse`) share: the C library, a C
//! daemon started under the run's allocator and followed through its
//! output, and the driver's end, which is the daemon's.
//!
//! A driver ([`Launch::Driver`](super::Launch::Driver)) is this binary
//! re-executed as `child <scenario>` in the run's cgroup, on the system
//! allocator. It starts the daemon, which inherits the cgroup, drives a
//! workload at it and reports in the status protocol; the allocator under
//! test is the daemon's.
//!
//! Invariant: the daemon never outlives its driver (the kernel kills it when
//! the driver's main thread ends: `PR_SET_PDEATHSIG`), and a driver whose
//! daemon died ends the same way once it has reported ([`end_like`]), so
//! that the harness reads the daemon's fate (an OOM kill, an abort, a crash)
//! as the run's.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{ChildConfig, Run};
use crate::allocator::Allocator;

/// The variable that tells a driver where `libshrinkalloc.so` is.
pub const LIB_ENV: &str = "SHRINKALLOC_STRESS_LIB";

/// glibc itself, preloaded: its malloc then comes before the one a daemon
/// links (Debian's `redis-server` links jemalloc).
pub const GLIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

/// The `libshrinkalloc.so` of the harness's own build (next to it). Under
/// cargo (`cargo run`, `cargo test`: `CARGO` is set) it is built first with
/// the harness's profile, which does nothing when it is fresh.
pub fn library() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let dir = exe.parent().ok_or("this executable has no directory")?;
    if let Ok(cargo) = std::env::var("CARGO") {
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(name) => name,
            None => return Err(format!("unexpected location {}", exe.display())),
        };
        let target = dir.parent().ok_or("the build directory has no parent")?;
        let out = Command::new(cargo)
            .args(["build", "--offline", "--lib", "-p", "shrinkalloc-ffi", "--profile", profile, "--target-dir"])
            .arg(target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo build -p shrinkalloc-ffi failed:\n{}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    let lib = dir.join("libshrinkalloc.so");
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(format!(
            "{} is missing: build the C library first (cargo build --release -p shrinkalloc-ffi)",
            lib.display()
        ))
    }
}

/// Fails unless `program --version` runs, naming the Debian package.
pub fn require(program: &str, package: &str) -> Result<(), String> {
    match Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        _ => Err(format!("`{program}` is missing or broken: apt-get install {package} (CI: .ci/run must install it)")),
    }
}

/// What a daemon preloads to allocate with `allocator`: shrinkalloc's
/// library when given (a daemon that links it needs none), glibc (see
/// [`GLIBC`]), or Debian's jemalloc, mimalloc or tcmalloc.
pub fn malloc_preload(allocator: Allocator, shrinkalloc: Option<&Path>) -> Option<String> {
    match allocator {
        Allocator::ShrinkAlloc | Allocator::ShrinkAllocNoShrink => shrinkalloc.map(|p| p.display().to_string()),
        Allocator::Glibc => Some(GLIBC.to_string()),
        Allocator::Jemalloc | Allocator::Mimalloc | Allocator::Tcmalloc => allocator.preload().map(str::to_string),
    }
}

/// A [`Run`] for a driver: its status lines carry the driver's own figures
/// as a process on the system allocator (no shrinkalloc figures of its own);
/// the daemon's come in the scenario's fields.
pub fn driver_run(cfg: &ChildConfig) -> Run {
    Run::new(&ChildConfig { allocator: Allocator::Glibc, ..cfg.clone() })
}

/// A daemon the driver started, and the threads that take in its output.
pub struct Daemon {
    child: Child,
    followers: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Starts `cmd` as the daemon, stdin empty, `out` and `err` called with
    /// each line of its stdout and stderr (in threads of their own). The
    /// kernel kills it when the calling thread ends: call it from the
    /// driver's main thread.
    pub fn start(
        cmd: &mut Command,
        out: impl FnMut(&str) + Send + 'static,
        err: impl FnMut(&str) + Send + 'static,
    ) -> io::Result<Daemon> {
        let driver = std::process::id() as libc::pid_t;
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: the closure runs between fork and exec and only makes
        // system calls (prctl, getppid, _exit) that are async-signal-safe,
        // allocate nothing and take no lock.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != driver {
                    // The driver died before the request took effect.
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let (stdout, stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
        Ok(Daemon { child, followers: vec![follow(stdout, out), follow(stderr, err)] })
    }

    /// The daemon's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the daemon to end. Once it has, every line
    /// it wrote has been taken in.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        };
        for f in self.followers.drain(..) {
            let _ = f.join();
        }
        Some(status)
    }

    /// Kills the daemon and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.wait_timeout(Duration::from_secs(5));
    }
}

/// Calls `each` with every line `from` yields, in a thread of its own,
/// until the end of the stream.
fn follow(from: impl Read + Send + 'static, mut each: impl FnMut(&str) + Send + 'static) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            each(&line);
        }
    })
}

/// The resident set of process `pid`, from `/proc/<pid>/statm`.
pub fn resident(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = text.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// `exit N` or `signal N`, for messages.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (_, Some(sig)) => format!("signal {sig}"),
        _ => "an unknown end".to_string(),
    }
}

/// Ends the driver as the daemon ended: the same exit code, or the same
/// signal (the harness then reads an OOM kill or an abort as the run's).
pub fn end_like(status: ExitStatus) -> ! {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    if let Some(sig) = status.signal() {
        // SAFETY: resetting a signal to its default action and raising it
        // have no memory-safety preconditions; with the default action the
        // process ends here (SIGKILL, SIGABRT, SIGSEGV all end it).
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    std::process::exit(status.code().unwrap_or(1))
}

/// Named figures a driver reports in its status lines, set from any thread.
pub struct Figures {
    names: Vec<&'static str>,
    values: Vec<AtomicU64>,
}

impl Figures {
    /// All of `names` at 0.
    pub fn new(names: Vec<&'static str>) -> Self {
        let values = names.iter().map(|_| AtomicU64::new(0)).collect();
        Figures { names, values }
    }

    fn slot(&self, name: &str) -> Option<&AtomicU64> {
        self.names.iter().position(|n| *n == name).map(|i| &self.values[i])
    }

    /// Sets `name` (ignored when it is not one of the names).
    pub fn set(&self, name: &str, v: u64) {
        if let Some(s) = self.slot(name) {
            // Relaxed, here and below: figures for reports, ordered with nothing.
            s.store(v, Ordering::Relaxed);
        }
    }

    /// Adds to `name`.
    pub fn add(&self, name: &str, v: u64) {
        if let Some(s) = self.slot(name) {
            s.fetch_add(v, Ordering::Relaxed);
        }
    }

    /// Raises `name` to `v` if it is lower.
    pub fn raise(&self, name: &str, v: u64) {
        if let Some(s) = self.slot(name) {
            s.fetch_max(v, Ordering::Relaxed);
        }
    }

    /// The value of `name` (0 when it is not one of the names).
    pub fn get(&self, name: &str) -> u64 {
        self.slot(name).map_or(0, |s| s.load(Ordering::Relaxed))
    }

    /// Every figure, for a status line.
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        self.names.iter().zip(&self.values).map(|(n, v)| (*n, v.load(Ordering::Relaxed))).collect()
    }
}

/// The figures of shrinkalloc's statistics a C daemon's `sa {...}` line
/// (`sa_stats_print()` as JSON) gives, as [`take_sa_stats`] names them.
pub const SA_FIELDS: [&str; 8] = [
    "in_use",
    "committed",
    "reclaim_passes",
    "direct_passes",
    "failed_charges",
    "hard_limit",
    "soft_limit",
    "fs_skipped",
];

/// Sets the [`SA_FIELDS`] from `sa_stats_print()`'s JSON.
pub fn take_sa_stats(json: &str, f: &Figures) {
    let num = |key: &str| -> Option<u64> {
        let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
        let digits: String = json[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok().or(json[at..].starts_with("null").then_some(0))
    };
    for (field, key) in [
        ("in_use", "in_use"),
        ("committed", "committed"),
        ("direct_passes", "direct"),
        ("failed_charges", "failed_charges"),
        ("hard_limit", "hard_limit"),
        ("soft_limit", "soft_limit"),
        ("fs_skipped", "skipped_by_mask"),
    ] {
        if let Some(v) = num(key) {
            f.set(field, v);
        }
    }
    let levels = ["none", "low", "medium", "critical"].map(num);
    if levels.iter().all(Option::is_some) {
        f.set("reclaim_passes", levels.iter().flatten().sum());
    }
}

/// Compiles a C daemon from `sources` (name, text; built into this binary;
/// the `.c` ones compiled) with `cc -Wall -Wextra -Werror`, `cflags` and
/// `libs`, linked against `lib` with an rpath, into `<lib's dir>/<name>.build/<name>`,
/// unless that binary is newer than its sources and the library.
pub fn build(
    lib: &Path,
    name: &str,
    sources: &[(&str, &str)],
    cflags: &[String],
    libs: &[String],
) -> Result<PathBuf, String> {
    let lib_dir = lib.parent().ok_or("the library has no directory")?;
    let dir = lib_dir.join(format!("{name}.build"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    for (file, text) in sources {
        let path = dir.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*text) {
            std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    let exe = dir.join(name);
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_input =
        sources.iter().map(|(n, _)| dir.join(n)).chain([lib.to_path_buf()]).filter_map(|p| mtime(&p)).max();
    if mtime(&exe).zip(newest_input).is_some_and(|(built, input)| built > input) {
        return Ok(exe);
    }
    let tmp = dir.join(format!("{name}.{}", std::process::id()));
    let out = Command::new("cc")
        .args(["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .args(cflags)
        .arg("-I")
        .arg(&dir)
        .args(sources.iter().filter(|(n, _)| n.ends_with(".c")).map(|(n, _)| dir.join(n)))
        .arg("-o")
        .arg(&tmp)
        .arg(lib)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .args(libs)
        .output()
        .map_err(|e| format!("cannot run cc: {e}"))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cc {name} failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    std::fs::rename(&tmp, &exe).map_err(|e| format!("cannot move {name} into place: {e}"))?;
    Ok(exe)
}
