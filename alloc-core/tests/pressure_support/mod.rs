//! Helpers shared by the `pressure_*` tests: running this test binary
//! again as a child in a chosen mode (with a deadline, its output kept in
//! files), the child's one-line reports, and memory cgroups made for a
//! test and removed again, also when the test fails.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use shrinkalloc::reclaim::{cgroup, Source, SourceStats};

pub const MIB: usize = 1 << 20;

/// Set in a child: which mode of the test to run.
pub const CHILD: &str = "SHRINKALLOC_TEST_PRESSURE_CHILD";

/// What a child did.
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    /// The `key=value` pairs of the child's `REPORT` lines.
    pub fn report(&self) -> Report {
        let mut map = HashMap::new();
        // libtest prints "test NAME ... " before the test's own output.
        for line in self.stdout.lines().filter_map(|l| l.find("REPORT ").map(|i| &l[i + 7..])) {
            for kv in line.split(' ') {
                if let Some((k, v)) = kv.split_once('=') {
                    map.insert(k.to_owned(), v.to_owned());
                }
            }
        }
        Report(map)
    }

    /// The signal that ended the child, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Everything the child printed, for failure messages.
    pub fn output(&self) -> String {
        format!("status {:?}\n--- stdout\n{}\n--- stderr\n{}", self.status, self.stdout, self.stderr)
    }
}

/// A child's report.
pub struct Report(pub HashMap<String, String>);

impl Report {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A number the child reported; panics if missing.
    pub fn num(&self, key: &str) -> u64 {
        let v = self.get(key).unwrap_or_else(|| panic!("the child reported no {key}: {:?}", self.0));
        v.parse().unwrap_or_else(|_| panic!("{key}={v} is not a number"))
    }
}

/// Prints one report line (`REPORT k=v ...`) for the parent.
pub fn report(pairs: &[(&str, String)]) {
    let mut line = String::from("REPORT");
    for (k, v) in pairs {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
}

/// A per-source summary for a report: `state,events,raises`.
pub fn source_summary(sources: &[SourceStats], src: Source) -> String {
    let s = sources.iter().find(|s| s.source == src).expect("every source is listed");
    format!("{:?},{},{}", s.state, s.events, s.raises).replace(' ', "")
}

/// Where tests keep files: a directory on the build's disk (not a tmpfs,
/// where reading a sparse file would never fill the page cache).
pub fn scratch_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pressure-{}", std::process::id()));
    fs::create_dir_all(&d).unwrap();
    d
}

/// Removes this process's scratch directory (the children's output files,
/// sockets, FIFOs): called at the end of each parent test.
pub fn remove_scratch_dir() {
    let _ = fs::remove_dir_all(scratch_dir());
}

/// Runs this test binary again as `test` with `CHILD=mode`, extra `env`
/// (a `None` value removes the variable), and `pre_exec` run in the child
/// between fork and exec; kills it after `limit`.
pub fn run_child(
    test: &str,
    mode: &str,
    env: &[(&str, Option<&str>)],
    pre_exec: Option<Box<dyn FnMut() -> io::Result<()> + Send + Sync>>,
    limit: Duration,
) -> Outcome {
    let dir = scratch_dir();
    let out_path = dir.join(format!("{test}-{mode}.out"));
    let err_path = dir.join(format!("{test}-{mode}.err"));
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    for var in ["SHRINKALLOC_SOFT_LIMIT", "SHRINKALLOC_HARD_LIMIT", "SHRINKALLOC_CGROUP", "SHRINKALLOC_MONITOR"] {
        cmd.env_remove(var);
    }
    for var in ["MEMORY_PRESSURE_WATCH", "MEMORY_PRESSURE_WRITE"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    if let Some(f) = pre_exec {
        // SAFETY: the hook only makes system calls on memory prepared
        // before the fork (see the callers); it never allocates.
        unsafe { cmd.pre_exec(f) };
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let s = child.wait().unwrap();
            eprintln!("child {test}/{mode} killed after {limit:?}");
            break s;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    Outcome { status, stdout: read(&out_path), stderr: read(&err_path), elapsed }
}

/// Which hierarchy a test group belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1 `memory` controller.
    V1,
    /// cgroup v2 with the memory controller.
    V2,
    /// cgroup v2 without a memory controller: only PSI (`memory.pressure`).
    V2PsiOnly,
}

/// A cgroup made by a test; removed (after killing what is left in it) when
/// dropped, retrying for a while: a group stays busy for a moment after its
/// last process died.
pub struct TestGroup {
    pub dir: PathBuf,
    pub hierarchy: Hierarchy,
    procs: CString,
}

impl TestGroup {
    fn create(dir: PathBuf, hierarchy: Hierarchy) -> io::Result<TestGroup> {
        fs::create_dir(&dir)?;
        let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
        Ok(TestGroup { dir, hierarchy, procs })
    }

    /// Writes `value` to control file `name`.
    pub fn write(&self, name: &str, value: &str) -> io::Result<()> {
        fs::write(self.dir.join(name), value)
    }

    /// Reads control file `name`.
    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// A `KEY VALUE` line of control file `name` (`memory.events`,
    /// `memory.oom_control`), as a number.
    pub fn key(&self, name: &str, key: &str) -> Option<u64> {
        cgroup::parse_key(self.read(name).as_bytes(), key.as_bytes())
    }

    /// The `cgroup.procs` path, NUL-terminated, for a pre-exec hook.
    pub fn procs_path(&self) -> CString {
        self.procs.clone()
    }

    fn remove(&self) {
        for attempt in 0..40 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => {
                    for pid in self.read("cgroup.procs").lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: kill takes no pointers; these are the
                        // test's own children, in the test's own group.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    thread::sleep(Duration::from_millis(if attempt < 10 { 20 } else { 100 }));
                }
            }
        }
        eprintln!("could not remove test cgroup {}", self.dir.display());
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// This process's memory cgroup hierarchies, found the way the library
/// finds them.
pub struct Host {
    /// The v1 memory directory of this process.
    pub v1: Option<PathBuf>,
    /// The v2 mount point and this process's directory under it.
    pub v2_mount: Option<PathBuf>,
    pub v2_dir: Option<PathBuf>,
}

fn os_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

impl Host {
    pub fn find() -> Host {
        let self_cg = fs::read("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = fs::read("/proc/self/mountinfo").unwrap_or_default();
        let paths = cgroup::parse_self_cgroup(&self_cg);
        let mut mounts = cgroup::Mounts::default();
        for line in mountinfo.split(|&b| b == b'\n') {
            cgroup::parse_mountinfo_line(line, &mut mounts);
        }
        let dir = |m: Option<cgroup::Mount<'_>>, p: Option<&[u8]>| {
            cgroup::cgroup_dir(m?, p?).map(|d| os_path(d.as_bytes())).filter(|d| d.is_dir())
        };
        Host {
            v1: dir(mounts.v1_memory, paths.v1_memory),
            v2_mount: dir(mounts.v2, Some(b"/")),
            v2_dir: dir(mounts.v2, paths.v2),
        }
    }

    /// Whether the v2 hierarchy has the memory controller at its root.
    pub fn v2_has_memory(&self) -> bool {
        self.v2_mount.as_ref().is_some_and(|m| {
            let c = fs::read_to_string(m.join("cgroup.subtree_control")).unwrap_or_default();
            c.split_whitespace().any(|w| w == "memory")
        })
    }

    /// A memory-limited group: a v1 child of this process's v1 memory
    /// group, or else a v2 group at the v2 root (where the memory
    /// controller is enabled for children).
    pub fn memory_group(&self, name: &str) -> io::Result<TestGroup> {
        if let Some(v1) = &self.v1 {
            return TestGroup::create(v1.join(name), Hierarchy::V1);
        }
        match &self.v2_mount {
            Some(m) if self.v2_has_memory() => TestGroup::create(m.join(name), Hierarchy::V2),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no memory controller")),
        }
    }

    /// A v2 child of this process's v2 group with no controller enabled:
    /// it still has its own `memory.pressure`.
    pub fn psi_group(&self, name: &str) -> io::Result<TestGroup> {
        let d = self.v2_dir.as_ref().or(self.v2_mount.as_ref());
        let d = d.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no cgroup v2"))?;
        TestGroup::create(d.join(name), Hierarchy::V2PsiOnly)
    }
}

/// Whether a test that needs root and a memory cgroup may skip instead of
/// failing (`SHRINKALLOC_TEST_ALLOW_NO_CGROUP=1`); CI runs as root.
pub fn skip_allowed(why: &str) -> bool {
    if std::env::var("SHRINKALLOC_TEST_ALLOW_NO_CGROUP").as_deref() == Ok("1") {
        eprintln!("skipping: {why} (SHRINKALLOC_TEST_ALLOW_NO_CGROUP=1)");
        return true;
    }
    false
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A pre-exec hook that moves the child into every group of `procs`
/// (NUL-terminated `cgroup.procs` paths) by writing `0` (the writer
/// itself). Only system calls on memory prepared before the fork.
pub fn join_groups(procs: Vec<CString>) -> Box<dyn FnMut() -> io::Result<()> + Send + Sync> {
    Box::new(move || {
        for p in &procs {
            // SAFETY: `p` is a NUL-terminated path made before the fork.
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a one-byte buffer that outlives the call.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            let err = io::Error::last_os_error();
            // SAFETY: `fd` was opened above.
            unsafe { libc::close(fd) };
            if n != 1 {
                return Err(err);
            }
        }
        Ok(())
    })
}
