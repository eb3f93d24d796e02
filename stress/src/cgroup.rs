//! Memory cgroups for the harness's children: make one, limit it, put a child
//! in it before the child allocates, watch it, remove it.
//!
//! A group is made as a child of this process's own memory cgroup (its path
//! read from `/proc/self/cgroup`): under `/sys/fs/cgroup/memory/` with cgroup
//! v1, or under `/sys/fs/cgroup/` with cgroup v2 when the root's
//! `cgroup.controllers` lists `memory` (then, since a v2 group that holds
//! processes cannot delegate controllers, the root is tried next).
//!
//! Invariant: every [`Cgroup`] value owns one directory that this process
//! made; dropping it removes the directory, killing whatever is still inside
//! (only ever the child this process put there), retrying while the kernel
//! finishes tearing a killed child down. Groups are named
//! `shrinkalloc-stress.<harness pid>.<what>`, so [`Hierarchy::sweep_stale`]
//! can remove those a killed harness left behind.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

/// The prefix of every group the harness makes.
pub const PREFIX: &str = "shrinkalloc-stress.";

/// Which cgroup interface a group uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The v1 `memory` controller.
    V1,
    /// The unified hierarchy with the `memory` controller.
    V2,
}

impl Version {
    /// `"cgroup v1"` or `"cgroup v2"`.
    pub fn name(self) -> &'static str {
        match self {
            Version::V1 => "cgroup v1",
            Version::V2 => "cgroup v2",
        }
    }

    fn limit_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }
    }

    fn usage_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        }
    }

    fn peak_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        }
    }

    /// The file with the `oom_kill N` line.
    fn oom_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        }
    }
}

/// Where this process may make memory cgroups.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    version: Version,
    /// Parent directories to try, best first.
    bases: Vec<PathBuf>,
}

impl Hierarchy {
    /// Finds the memory cgroup hierarchy, or says why there is none.
    pub fn find() -> Result<Hierarchy, String> {
        let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let v2_root = Path::new("/sys/fs/cgroup");
        let v2_controllers = fs::read_to_string(v2_root.join("cgroup.controllers")).unwrap_or_default();
        if v2_controllers.split_whitespace().any(|c| c == "memory") {
            let path = own_path(&own, |c| c.is_empty()).unwrap_or_default();
            let mut bases = vec![join_rel(v2_root, &path)];
            if !path.trim_matches('/').is_empty() {
                bases.push(v2_root.to_path_buf());
            }
            return Ok(Hierarchy { version: Version::V2, bases });
        }
        let v1_root = Path::new("/sys/fs/cgroup/memory");
        if v1_root.join("memory.limit_in_bytes").exists() {
            let path = own_path(&own, |c| c.split(',').any(|c| c == "memory")).unwrap_or_default();
            let mut bases = vec![join_rel(v1_root, &path)];
            if !path.trim_matches('/').is_empty() {
                bases.push(v1_root.to_path_buf());
            }
            return Ok(Hierarchy { version: Version::V1, bases });
        }
        Err("no memory cgroup controller: neither /sys/fs/cgroup/cgroup.controllers lists `memory` (v2) \
             nor /sys/fs/cgroup/memory exists (v1)"
            .to_string())
    }

    /// The interface in use.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Makes group `name` with a memory limit of `limit` bytes and no swap.
    pub fn create(&self, name: &str, limit: usize) -> Result<Cgroup, String> {
        let mut errors = Vec::new();
        for base in self.bases.iter().filter(|b| b.is_dir()) {
            match self.create_in(base, name, limit) {
                Ok(g) => return Ok(g),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            errors.push(format!("none of {:?} exists", self.bases));
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        Err(format!("{}{}", errors.join("; "), if root { "" } else { " (not running as root)" }))
    }

    fn create_in(&self, base: &Path, name: &str, limit: usize) -> Result<Cgroup, String> {
        if self.version == Version::V2 {
            // Lets children of `base` have the controller; refused (EBUSY)
            // when `base` holds processes, and then `base` cannot host us.
            let _ = fs::write(base.join("cgroup.subtree_control"), "+memory");
        }
        let dir = base.join(name);
        if dir.exists() {
            // Left by an earlier harness with our pid: it is ours to reuse.
            let _ = fs::remove_dir(&dir);
        }
        fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let group = Cgroup { dir, version: self.version, removed: false };
        let limit_path = group.dir.join(self.version.limit_file());
        if !limit_path.exists() {
            return Err(format!("{} has no {}", group.dir.display(), self.version.limit_file()));
        }
        fs::write(&limit_path, limit.to_string()).map_err(|e| format!("write {}: {e}", limit_path.display()))?;
        // No swap, so that the limit means memory (ignored where absent).
        match self.version {
            Version::V1 => {
                let _ = fs::write(group.dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
                let _ = fs::write(group.dir.join("memory.swappiness"), "0");
            }
            Version::V2 => {
                let _ = fs::write(group.dir.join("memory.swap.max"), "0");
            }
        }
        Ok(group)
    }

    /// Sets the group's soft line: `memory.high` (v2), where the kernel
    /// throttles and reclaims, or `memory.soft_limit_in_bytes` (v1). A
    /// shrinkalloc child derives its soft limit from it.
    pub fn set_high(&self, g: &Cgroup, bytes: usize) -> Result<(), String> {
        let file = match self.version {
            Version::V1 => "memory.soft_limit_in_bytes",
            Version::V2 => "memory.high",
        };
        let path = g.dir.join(file);
        fs::write(&path, bytes.to_string()).map_err(|e| format!("write {}: {e}", path.display()))
    }

    /// Removes empty groups left by harnesses that are no longer running;
    /// returns the ones removed.
    pub fn sweep_stale(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for base in &self.bases {
            let Ok(entries) = fs::read_dir(base) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('.').next()?.parse::<i32>().ok()) else {
                    continue;
                };
                if process_alive(pid) {
                    continue;
                }
                let path = entry.path();
                let empty = fs::read_to_string(path.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
                if empty && fs::remove_dir(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
        removed
    }
}

/// The cgroup path of the first line of `/proc/self/cgroup` whose controller
/// list satisfies `want`.
fn own_path(proc_self_cgroup: &str, want: impl Fn(&str) -> bool) -> Option<String> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        want(controllers).then(|| path.to_string())
    })
}

fn join_rel(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that `pid` exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// A memory cgroup this process made; removed on drop.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    version: Version,
    removed: bool,
}

impl Cgroup {
    /// The group's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Arranges for `cmd`'s child to join this group between `fork` and
    /// `exec`, before it allocates anything of its own. The returned file
    /// must be kept open until `cmd` is spawned.
    pub fn join_on_spawn(&self, cmd: &mut Command) -> io::Result<File> {
        let procs = OpenOptions::new().write(true).open(self.dir.join("cgroup.procs"))?;
        let fd = procs.as_raw_fd();
        // SAFETY: the closure runs in the forked child before `exec` and only
        // calls `getpid` and `write` on stack memory (async-signal-safe, no
        // allocation, no lock); `fd` stays open in the child because the
        // caller keeps `procs` open until the spawn returns.
        unsafe {
            cmd.pre_exec(move || write_own_pid(fd));
        }
        Ok(procs)
    }

    /// Bytes charged to the group now.
    pub fn usage(&self) -> Option<usize> {
        read_number(&self.dir.join(self.version.usage_file()))
    }

    /// The most bytes ever charged to the group (`None` where the kernel
    /// does not keep it).
    pub fn peak(&self) -> Option<usize> {
        read_number(&self.dir.join(self.version.peak_file()))
    }

    /// Processes the OOM killer killed in the group.
    pub fn oom_kills(&self) -> u64 {
        event_count(&self.dir.join(self.version.oom_file()), "oom_kill")
    }

    /// Times usage hit the limit (v1 `memory.failcnt`, v2 `max` in
    /// `memory.events`): the kernel had to reclaim or fail a charge.
    pub fn limit_hits(&self) -> u64 {
        match self.version {
            Version::V1 => read_number(&self.dir.join("memory.failcnt")).unwrap_or(0) as u64,
            Version::V2 => event_count(&self.dir.join("memory.events"), "max"),
        }
    }

    /// Removes the group, first killing anything left in it, and retries for
    /// a few seconds while the kernel finishes with a killed process.
    pub fn remove(&mut self) -> Result<(), String> {
        if self.removed {
            return Ok(());
        }
        let mut last = String::new();
        for _ in 0..50 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => {
                    self.removed = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.removed = true;
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
            self.kill_members();
            thread::sleep(Duration::from_millis(100));
        }
        Err(format!("cannot remove {}: {last}", self.dir.display()))
    }

    /// SIGKILLs every process still in the group: only the child this
    /// process put there can be in it.
    fn kill_members(&self) {
        let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("shrinkalloc-stress: ERROR: {e}");
        }
    }
}

/// Writes the calling process's pid to `fd` (a `cgroup.procs` file), which
/// moves the process into that group. Runs between `fork` and `exec`: no
/// allocation, no lock.
fn write_own_pid(fd: i32) -> io::Result<()> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut buf = [0u8; 12];
    let n = format_decimal(pid as u32, &mut buf);
    let digits = &buf[buf.len() - n..];
    // SAFETY: `digits` is a valid buffer of `digits.len()` bytes.
    let written = unsafe { libc::write(fd, digits.as_ptr().cast(), digits.len()) };
    if written == digits.len() as isize {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes `n` in decimal at the end of `buf`; returns the digits written.
fn format_decimal(mut n: u32, buf: &mut [u8; 12]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return buf.len() - i;
        }
    }
}

/// The number after `key ` in a file of `key value` lines.
fn event_count(path: &Path, key: &str) -> u64 {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0)
}

fn read_number(path: &Path) -> Option<usize> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_path_picks_the_memory_line_or_the_unified_one() {
        let text = "5:devices:/\n4:memory:/process_api/abc\n0::/user.slice/x.scope\n";
        assert_eq!(own_path(text, |c| c.split(',').any(|c| c == "memory")).as_deref(), Some("/process_api/abc"));
        assert_eq!(own_path(text, |c| c.is_empty()).as_deref(), Some("/user.slice/x.scope"));
        assert_eq!(own_path("1:cpu,memory:/a\n", |c| c.split(',').any(|c| c == "memory")).as_deref(), Some("/a"));
        assert_eq!(join_rel(Path::new("/sys/fs/cgroup"), "/"), PathBuf::from("/sys/fs/cgroup/"));
    }

    #[test]
    fn pid_formats_without_allocating() {
        let mut buf = [0u8; 12];
        let n = format_decimal(4_194_304, &mut buf);
        assert_eq!(&buf[12 - n..], b"4194304");
        let n = format_decimal(0, &mut buf);
        assert_eq!(&buf[12 - n..], b"0");
    }
}
