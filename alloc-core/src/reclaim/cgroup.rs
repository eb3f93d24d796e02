//! The process's memory cgroup: where it is, what limits it sets, and the
//! soft and hard limits shrinkalloc derives from them.
//!
//! Discovery reads `/proc/self/cgroup` and `/proc/self/mountinfo`, finds the
//! cgroup v2 (unified) directory and the cgroup v1 `memory` controller's
//! directory, wherever they are mounted, and reads the limits of that
//! directory and of every ancestor up to the mount's root, keeping the
//! smallest (a parent's limit binds its children). It runs once, on the
//! first allocation slow path that checks limits, and never allocates: all
//! text goes through fixed buffers, so it is safe inside `malloc`.
//!
//! Derived limits (used only when no limit is configured):
//!
//! | | cgroup v2 | cgroup v1 |
//! |---|---|---|
//! | group limit `L` | `memory.max` | `memory.limit_in_bytes` |
//! | hard limit | `L - max(L/16, 8 MiB)`; none without `L` | `L - max(L/16, 8 MiB)` |
//! | soft limit | `H - H/16` with `H` = `memory.high` if set, else `S` | `memory.soft_limit_in_bytes` if set, else `S` |
//!
//! with `S` = the larger of hard `- max(L/8, 8 MiB)` and `3L/4`.
//!
//! A v1 group without `L` gives no limits; a v2 group without `L` gives
//! them only with `memory.high`. The soft limit never exceeds the hard one.
//! The margin under `L` leaves room for what the process maps outside the
//! allocator (code, stacks, page cache charged to the group) and for what
//! the group's usage can grow between two readings. Both margins have a
//! floor in bytes because what they cover does not grow with the limit:
//! from 128 MiB on, the hard line is at 15/16 of `L` and the soft one at
//! 13/16 (background reclaim keeps the group near the guard, halfway
//! between, 7/8); from 64 to 128 MiB `L` less 8 and 16 MiB; under 64 MiB
//! the soft line stays at `3L/4`, where it always was. With
//! `L - max(L/8, 8 MiB)` and `3L/4` a cache daemon's usage sat at 81-83% of
//! its limit at 128 MiB, and its cache got 0.86 of the hits of an exact LRU
//! of 75% of the limit; now 87-90% and 0.92 (issue 10, stress/README.md).
//!
//! On v2 the soft line stays 1/16 under `memory.high`: past it the kernel
//! throttles every thread of the group that charges memory, the library's
//! reclaimers included, so background reclaim must work below it; v1's
//! soft limit throttles nothing and is taken as it is.
//!
//! Transparent huge pages in the system's `always` mode would charge the
//! group for memory the allocator never committed (a first touch takes
//! 2 MiB; khugepaged fills partly used 2 MiB ranges; a purge of part of a
//! huge page gives nothing back until the kernel itself reclaims):
//! [`thp_always`] says whether that mode is in force, and configuration
//! (`config.rs`) then turns them off for a process under a limit.
//!
//! Invariant: every parser here takes bytes and returns a value or `None`;
//! none can panic on any input (fixture tests feed them garbage).

use crate::lock::SpinLock;
use crate::os;

/// Which cgroup hierarchy a directory belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// cgroup v1, `memory` controller.
    V1,
    /// cgroup v2, unified hierarchy.
    V2,
}

/// The value of a limit file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// No limit (`max`, or v1's page-counter maximum).
    Max,
    /// A limit in bytes.
    Bytes(u64),
}

/// Values at or above this are v1's "unlimited" (9223372036854771712 and kin).
const V1_UNLIMITED: u64 = 1 << 62;

/// Parses a control file holding one limit: `max`, or a decimal byte count,
/// with surrounding whitespace. `None` for anything else.
pub fn parse_value(text: &[u8]) -> Option<Value> {
    let t = text.trim_ascii();
    if t == b"max" {
        return Some(Value::Max);
    }
    if t.is_empty() || t.len() > 20 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = t.iter().try_fold(0u64, |acc, &b| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))?;
    Some(if n >= V1_UNLIMITED { Value::Max } else { Value::Bytes(n) })
}

/// Where the kernel says which transparent huge page mode is in force.
pub(crate) const THP_ENABLED: &[u8] = b"/sys/kernel/mm/transparent_hugepage/enabled\0";

/// Whether the text of `/sys/kernel/mm/transparent_hugepage/enabled` selects
/// `always` (the kernel brackets the mode in force: `[always] madvise never`).
/// In `madvise` and `never` the allocator's memory gets no huge page, since
/// it never asks for one.
///
/// ```
/// use shrinkalloc::reclaim::cgroup::thp_always;
/// assert!(thp_always(b"[always] madvise never\n"));
/// assert!(!thp_always(b"always [madvise] never\n"));
/// assert!(!thp_always(b""));
/// ```
pub fn thp_always(text: &[u8]) -> bool {
    text.split(u8::is_ascii_whitespace).any(|w| w == b"[always]")
}

/// The process's cgroup paths, from `/proc/self/cgroup`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelfCgroup<'a> {
    /// Path in the unified hierarchy (line `0::PATH`).
    pub v2: Option<&'a [u8]>,
    /// Path in the v1 hierarchy that has the `memory` controller.
    pub v1_memory: Option<&'a [u8]>,
}

/// Parses `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` per line).
pub fn parse_self_cgroup(text: &[u8]) -> SelfCgroup<'_> {
    let mut out = SelfCgroup::default();
    for line in text.split(|&b| b == b'\n') {
        let mut parts = line.splitn(3, |&b| b == b':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if !path.starts_with(b"/") {
            continue;
        }
        if id == b"0" && controllers.is_empty() {
            out.v2 = Some(path);
        } else if controllers.split(|&b| b == b',').any(|c| c == b"memory") {
            out.v1_memory = Some(path);
        }
    }
    out
}

/// A cgroup filesystem mount, from `/proc/self/mountinfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mount<'a> {
    /// The cgroup path mounted there (field 4), usually `/`.
    pub root: &'a [u8],
    /// Where it is mounted (field 5), still octal-escaped (`\040`).
    pub mount_point: &'a [u8],
}

/// The cgroup mounts that matter: the unified one and v1 `memory`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mounts<'a> {
    /// The `cgroup2` mount.
    pub v2: Option<Mount<'a>>,
    /// The `cgroup` mount whose super options include `memory`.
    pub v1_memory: Option<Mount<'a>>,
}

/// Parses one line of `/proc/self/mountinfo`, keeping cgroup mounts.
pub fn parse_mountinfo_line<'a>(line: &'a [u8], mounts: &mut Mounts<'a>) {
    let mut fields = line.split(|&b| b == b' ');
    let (Some(_id), Some(_parent), Some(_dev), Some(root), Some(point)) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return;
    };
    // Optional fields end at a lone "-"; then fstype, source, super options.
    let mut rest = fields.skip_while(|f| *f != b"-").skip(1);
    let (Some(fstype), Some(_source), Some(options)) = (rest.next(), rest.next(), rest.next()) else { return };
    let mount = Mount { root, mount_point: point };
    if fstype == b"cgroup2" {
        mounts.v2.get_or_insert(mount);
    } else if fstype == b"cgroup" && options.split(|&b| b == b',').any(|o| o == b"memory") {
        mounts.v1_memory.get_or_insert(mount);
    }
}

/// A path built without allocating.
#[derive(Clone, Copy)]
pub struct PathBuf {
    buf: [u8; 1024],
    len: usize,
}

impl Default for PathBuf {
    /// The empty path.
    fn default() -> Self {
        Self::new()
    }
}

impl PathBuf {
    pub(crate) const fn new() -> Self {
        Self { buf: [0; 1024], len: 0 }
    }

    /// The path's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn push(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len()).filter(|&e| e < self.buf.len())?;
        self.buf[self.len..end].copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    /// Appends a mountinfo field, decoding its `\ooo` octal escapes.
    fn push_unescaped(&mut self, field: &[u8]) -> Option<()> {
        let mut i = 0;
        while i < field.len() {
            let esc = field.get(i..i + 4).filter(|e| e[0] == b'\\' && e[1..].iter().all(|d| (b'0'..=b'7').contains(d)));
            if let Some(e) = esc {
                let v = (u32::from(e[1] - b'0') << 6) | (u32::from(e[2] - b'0') << 3) | u32::from(e[3] - b'0');
                self.push(&[u8::try_from(v).ok()?])?;
                i += 4;
            } else {
                self.push(&field[i..=i])?;
                i += 1;
            }
        }
        Some(())
    }

    /// Drops the last path component; `false` at the root.
    fn pop(&mut self, floor: usize) -> bool {
        match self.buf.get(floor..self.len).and_then(|tail| tail.iter().rposition(|&b| b == b'/')) {
            Some(i) => {
                self.len = floor + i;
                true
            }
            None => false,
        }
    }
}

/// The directory of the process's cgroup: the mount point plus the cgroup
/// path below the mount's root. `None` if it does not fit or does not match.
pub fn cgroup_dir(mount: Mount<'_>, path: &[u8]) -> Option<PathBuf> {
    let mut dir = PathBuf::new();
    dir.push_unescaped(mount.mount_point)?;
    let below = if mount.root == b"/" { path } else { path.strip_prefix(mount.root).unwrap_or(path) };
    if below != b"/" {
        if !below.starts_with(b"/") {
            dir.push(b"/")?;
        }
        dir.push(below)?;
    }
    Some(dir)
}

/// What discovery found, for statistics and the derived limits.
#[derive(Clone, Copy)]
pub struct Found {
    /// The hierarchy the limits come from.
    pub version: Version,
    /// The process's cgroup directory.
    pub dir: PathBuf,
    /// Smallest `memory.max` / `memory.limit_in_bytes` on the way to the root.
    pub limit: Option<u64>,
    /// Smallest `memory.high` / `memory.soft_limit_in_bytes`.
    pub high: Option<u64>,
}

impl Found {
    /// The (soft, hard) limits derived from the group's limits (see the
    /// module's table); `None` when the group sets no limit. On v2,
    /// `memory.high` without `memory.max` gives a soft line and no hard one:
    /// the kernel never OOM-kills there, but throttles.
    ///
    /// ```
    /// use shrinkalloc::reclaim::cgroup::{Found, PathBuf, Version};
    /// let high_only = Found { version: Version::V2, dir: PathBuf::default(), limit: None, high: Some(160 << 20) };
    /// assert_eq!(high_only.derived_limits(), Some((150 << 20, None)));
    /// ```
    pub fn derived_limits(&self) -> Option<(u64, Option<u64>)> {
        let Some(limit) = self.limit else {
            let high = self.high.filter(|_| self.version == Version::V2)?;
            return (high >= 16).then_some((high - high / 16, None));
        };
        let hard = limit.saturating_sub((limit / 16).max(8 << 20));
        let soft = match (self.version, self.high) {
            (Version::V2, Some(high)) => high - high / 16,
            (Version::V1, Some(high)) => high,
            // Never under 3/4 of the limit: under 64 MiB the floors would
            // put it there (32 MiB: 16 MiB), and a small group's cache
            // would shrink for what a large one gains.
            (_, None) => hard.saturating_sub((limit / 8).max(8 << 20)).max(limit / 4 * 3),
        };
        let soft = soft.min(hard);
        (hard > 0).then_some((soft, Some(hard)))
    }
}

impl PathBuf {
    /// `dir/name` with a terminating NUL, ready for `open`.
    pub(crate) fn file(&self, name: &[u8]) -> Option<PathBuf> {
        let mut path = *self;
        path.push(b"/")?;
        path.push(name)?;
        path.push(b"\0")?;
        Some(path)
    }

    /// A NUL-terminated copy of `bytes`, ready for `open`.
    pub(crate) fn c_path(bytes: &[u8]) -> Option<PathBuf> {
        let mut p = PathBuf::new();
        p.push(bytes)?;
        p.push(b"\0")?;
        Some(p)
    }
}

/// Reads a small control file under `dir` into `buf`; `None` if missing.
fn read_file<'b>(dir: &PathBuf, name: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let n = os::read_file(dir.file(name)?.as_bytes(), buf)?;
    buf.get(..n)
}

/// The limit in file `name` of `dir`: `None` when the file cannot be read,
/// `Some(None)` when it sets none (`max`) or holds garbage.
fn limit_in(dir: &PathBuf, name: &[u8]) -> Option<Option<u64>> {
    let mut buf = [0u8; 64];
    let text = read_file(dir, name, &mut buf)?;
    Some(match parse_value(text) {
        Some(Value::Bytes(n)) => Some(n),
        _ => None,
    })
}

/// The smallest limit in file `name` from `dir` up to `floor` bytes of it
/// (the mount point). Missing or unreadable files and garbage count as no
/// limit at that level.
fn min_up(dir: &PathBuf, floor: usize, name: &[u8]) -> Option<u64> {
    let mut d = *dir;
    let mut best: Option<u64> = None;
    loop {
        best = best.into_iter().chain(limit_in(&d, name).flatten()).min();
        if !d.pop(floor) {
            return best;
        }
    }
}

/// [`min_up`] for a group that must have file `name` itself (the
/// controller's file): `None` when the group's own file cannot be read (the
/// group lacks the controller), without looking further up; else the
/// smallest limit from `dir` up. The group's file is read once.
fn own_min_up(dir: &PathBuf, floor: usize, name: &[u8]) -> Option<Option<u64>> {
    let own = limit_in(dir, name)?;
    let mut up = *dir;
    let above = if up.pop(floor) { min_up(&up, floor, name) } else { None };
    Some(own.into_iter().chain(above).min())
}

/// Finds the process's memory cgroup and its limits, given the texts of
/// `/proc/self/cgroup` and `/proc/self/mountinfo`. Prefers v2 when its
/// directory has `memory.max`, else v1 `memory`.
pub fn discover_from(self_cgroup: &[u8], mountinfo: &[u8]) -> Option<Found> {
    let paths = parse_self_cgroup(self_cgroup);
    let mut mounts = Mounts::default();
    for line in mountinfo.split(|&b| b == b'\n') {
        parse_mountinfo_line(line, &mut mounts);
    }
    if let (Some(path), Some(mount)) = (paths.v2, mounts.v2) {
        if let Some(dir) = cgroup_dir(mount, path) {
            let floor = cgroup_dir(mount, b"/").map_or(0, |m| m.len);
            if let Some(limit) = own_min_up(&dir, floor, b"memory.max") {
                let high = min_up(&dir, floor, b"memory.high");
                return Some(Found { version: Version::V2, dir, limit, high });
            }
        }
    }
    let (path, mount) = (paths.v1_memory?, mounts.v1_memory?);
    let dir = cgroup_dir(mount, path)?;
    let floor = cgroup_dir(mount, b"/").map_or(0, |m| m.len);
    let limit = own_min_up(&dir, floor, b"memory.limit_in_bytes")?;
    let high = min_up(&dir, floor, b"memory.soft_limit_in_bytes");
    Some(Found { version: Version::V1, dir, limit, high })
}

/// Texts of `/proc/self/cgroup` and `/proc/self/mountinfo` fit here; a
/// mountinfo longer than this is cut at a line boundary. Static, not on the
/// stack: discovery may run on a thread with a small stack, inside `malloc`.
const PROC_BUF: usize = 64 * 1024;
pub(crate) static BUFFERS: SpinLock<([u8; 4096], [u8; PROC_BUF])> = SpinLock::new(([0; 4096], [0; PROC_BUF]));

/// Runs `f` over the texts of `/proc/self/cgroup` and `/proc/self/mountinfo`
/// (read into the static buffers, under their lock).
fn with_proc_texts<R>(f: impl FnOnce(&[u8], &[u8]) -> Option<R>) -> Option<R> {
    let mut bufs = BUFFERS.lock();
    let (cg, mi) = &mut *bufs;
    let n = os::read_file(b"/proc/self/cgroup\0", cg)?;
    let m = os::read_file(b"/proc/self/mountinfo\0", mi)?;
    let mi = &mi[..m];
    let mi = if m == PROC_BUF { &mi[..mi.iter().rposition(|&b| b == b'\n').unwrap_or(0)] } else { mi };
    f(&cg[..n], mi)
}

/// Discovers the process's memory cgroup from `/proc`. Called once.
pub fn discover() -> Option<Found> {
    with_proc_texts(discover_from)
}

/// The process's directory in the unified (v2) hierarchy, given the texts
/// of `/proc/self/cgroup` and `/proc/self/mountinfo`, whatever controllers
/// it has: its `memory.pressure` reports the group's stalls even where the
/// memory controller is v1 (a hybrid machine, like CI's).
pub fn unified_dir_from(self_cgroup: &[u8], mountinfo: &[u8]) -> Option<PathBuf> {
    let mut mounts = Mounts::default();
    for line in mountinfo.split(|&b| b == b'\n') {
        parse_mountinfo_line(line, &mut mounts);
    }
    cgroup_dir(mounts.v2?, parse_self_cgroup(self_cgroup).v2?)
}

/// The process's unified-hierarchy directory, read from `/proc` now.
///
/// ```
/// if let Some(dir) = shrinkalloc::reclaim::cgroup::unified_dir() {
///     println!("PSI of my group: {}/memory.pressure", String::from_utf8_lossy(dir.as_bytes()));
/// }
/// ```
pub fn unified_dir() -> Option<PathBuf> {
    with_proc_texts(unified_dir_from)
}

/// The value of `key` in a flat-keyed control file (`memory.events`,
/// `memory.stat`: one `KEY VALUE` per line); `None` when the key is
/// missing or its value is not a number.
///
/// ```
/// use shrinkalloc::reclaim::cgroup::parse_key;
/// assert_eq!(parse_key(b"low 0\nhigh 12\nmax 3\n", b"high"), Some(12));
/// assert_eq!(parse_key(b"high x\n", b"high"), None);
/// ```
pub fn parse_key(text: &[u8], key: &[u8]) -> Option<u64> {
    text.split(|&b| b == b'\n').find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(b" ")?;
        match parse_value(rest)? {
            Value::Bytes(n) => Some(n),
            Value::Max => None,
        }
    })
}

/// The counters of a v2 `memory.events` file that reclaim watches: how
/// often the group went over `memory.high` (and was throttled), hit
/// `memory.max`, ran out of memory, and lost a task to the OOM killer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// `high`: reclaim forced by `memory.high`.
    pub high: u64,
    /// `max`: the group hit `memory.max`.
    pub max: u64,
    /// `oom`: the group ran out of memory.
    pub oom: u64,
    /// `oom_kill`: tasks killed by the OOM killer.
    pub oom_kill: u64,
}

impl Events {
    /// Parses `memory.events`; `None` when it has none of the keys. A key
    /// missing or garbled counts as 0.
    ///
    /// ```
    /// use shrinkalloc::reclaim::cgroup::Events;
    /// let e = Events::parse(b"low 0\nhigh 5\nmax 2\noom 0\noom_kill 0\noom_group_kill 0\n").unwrap();
    /// assert_eq!((e.high, e.max), (5, 2));
    /// assert!(Events::parse(b"garbage").is_none());
    /// ```
    pub fn parse(text: &[u8]) -> Option<Events> {
        let get = |k: &[u8]| parse_key(text, k);
        let (high, max, oom, oom_kill) = (get(b"high"), get(b"max"), get(b"oom"), get(b"oom_kill"));
        if high.is_none() && max.is_none() && oom.is_none() && oom_kill.is_none() {
            return None;
        }
        let z = |v: Option<u64>| v.unwrap_or(0);
        Some(Events { high: z(high), max: z(max), oom: z(oom), oom_kill: z(oom_kill) })
    }
}

/// The byte count in the group's control file `name` under `dir` (one
/// value, as [`parse_value`] reads it): `Err(errno)` if it cannot be read
/// or holds anything else (`max` included).
pub(crate) fn read_bytes(dir: &PathBuf, name: &[u8]) -> Result<u64, i32> {
    let path = dir.file(name).ok_or(libc::ENAMETOOLONG)?;
    let fd = os::open(path.as_bytes(), libc::O_RDONLY)?;
    let mut buf = [0u8; 64];
    let r = os::read_fd(fd, &mut buf);
    os::close(fd);
    match parse_value(&buf[..r?]) {
        Some(Value::Bytes(n)) => Ok(n),
        _ => Err(libc::EINVAL),
    }
}

/// The value of `key` in the flat-keyed control file at `path`
/// (NUL-terminated), read in small pieces: `memory.stat` runs to a few KiB,
/// and this may run inside `malloc` on a thread with a small stack.
pub(crate) fn read_key(path: &PathBuf, key: &[u8]) -> Result<Option<u64>, i32> {
    let fd = os::open(path.as_bytes(), libc::O_RDONLY)?;
    let mut buf = [0u8; 512];
    // Bytes of a partial line carried over; whether a line too long for
    // the buffer is being skipped to its end.
    let (mut carry, mut skipping) = (0, false);
    let r = loop {
        let n = match os::read_fd(fd, &mut buf[carry..]) {
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        let end = carry + n;
        let whole = if n == 0 { end } else { buf[..end].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
        let mut lines = &buf[..whole];
        if skipping && whole > 0 {
            lines = lines.iter().position(|&b| b == b'\n').map_or(&b""[..], |i| &lines[i + 1..]);
            skipping = false;
        }
        if let Some(v) = parse_key(lines, key) {
            break Ok(Some(v));
        }
        if n == 0 {
            break Ok(None);
        }
        carry = end - whole;
        if carry == buf.len() {
            (carry, skipping) = (0, true);
        } else {
            buf.copy_within(whole..end, 0);
        }
    };
    os::close(fd);
    r
}

/// What discovery found at start-up, for the statistics; `None` when there
/// was no memory cgroup, or discovery was off or not run.
pub(crate) static FOUND: SpinLock<Option<Found>> = SpinLock::new(None);

/// Records what discovery found (called once by the limits' set-up).
pub(crate) fn remember(found: Option<Found>) {
    *FOUND.lock() = found;
}

/// The memory cgroup found at start-up, if any.
///
/// ```
/// if let Some(cg) = shrinkalloc::reclaim::cgroup::found() {
///     println!("{:?} cgroup at {}", cg.version, String::from_utf8_lossy(cg.dir.as_bytes()));
/// }
/// ```
pub fn found() -> Option<Found> {
    *FOUND.lock()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_max_bytes_and_v1_unlimited_and_reject_garbage() {
        assert_eq!(parse_value(b"max\n"), Some(Value::Max));
        assert_eq!(parse_value(b"268435456\n"), Some(Value::Bytes(256 << 20)));
        assert_eq!(parse_value(b"9223372036854771712\n"), Some(Value::Max));
        for bad in [&b""[..], b"\n", b"-1", b"12k", b"99999999999999999999999", b"1 2", b"\xff"] {
            assert_eq!(parse_value(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn self_cgroup_finds_v2_and_v1_memory_paths() {
        let text = b"9:name=systemd:/\n4:memory:/process_api/abc\n3:cpuset:/\n0::/user.slice/x\ngarbage\n::\n";
        let cg = parse_self_cgroup(text);
        assert_eq!(cg.v1_memory, Some(&b"/process_api/abc"[..]));
        assert_eq!(cg.v2, Some(&b"/user.slice/x"[..]));
        assert_eq!(parse_self_cgroup(b"not a cgroup file"), SelfCgroup::default());
        let v1_combined = parse_self_cgroup(b"5:cpu,memory,blkio:/a\n");
        assert_eq!(v1_combined.v1_memory, Some(&b"/a"[..]));
    }

    #[test]
    fn mountinfo_finds_cgroup_mounts_anywhere() {
        let text = b"22 1 0:21 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n\
30 22 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:13 - cgroup cgroup rw,memory\n\
31 22 0:27 / /sys/fs/cgroup/unified rw shared:14 - cgroup2 cgroup2 rw\n\
40 1 0:40 /sub /srv/my\\040cg rw - cgroup cgroup rw,cpu,memory\n\
short line\n";
        let mut m = Mounts::default();
        for line in text.split(|&b| b == b'\n') {
            parse_mountinfo_line(line, &mut m);
        }
        assert_eq!(m.v1_memory.unwrap().mount_point, b"/sys/fs/cgroup/memory");
        assert_eq!(m.v2.unwrap().mount_point, b"/sys/fs/cgroup/unified");
        let mut m = Mounts::default();
        parse_mountinfo_line(b"40 1 0:40 /sub /srv/my\\040cg rw - cgroup cgroup rw,cpu,memory", &mut m);
        let dir = cgroup_dir(m.v1_memory.unwrap(), b"/sub/job").unwrap();
        assert_eq!(dir.as_bytes(), b"/srv/my cg/job");
    }

    #[test]
    fn derived_limits_leave_a_margin_and_keep_soft_under_hard() {
        let f = |limit, high| Found { version: Version::V1, dir: PathBuf::new(), limit, high };
        // From 128 MiB on: 13/16 and 15/16 of the limit.
        assert_eq!(f(Some(384 << 20), None).derived_limits(), Some((312 << 20, Some(360 << 20))));
        assert_eq!(f(Some(128 << 20), None).derived_limits(), Some((104 << 20, Some(120 << 20))));
        // Under it, the floors: 8 MiB under the limit, 8 more under that.
        assert_eq!(f(Some(64 << 20), None).derived_limits(), Some((48 << 20, Some(56 << 20))));
        assert_eq!(f(Some(96 << 20), None).derived_limits(), Some((76 << 20, Some(88 << 20))));
        // Under 64 MiB the soft line never falls under 3/4 of the limit.
        assert_eq!(f(Some(32 << 20), None).derived_limits(), Some((24 << 20, Some(24 << 20))));
        assert_eq!(f(Some(48 << 20), None).derived_limits(), Some((36 << 20, Some(40 << 20))));
        assert_eq!(f(Some(1 << 30), Some(1000 << 20)).derived_limits(), Some((960 << 20, Some(960 << 20))));
        assert_eq!(f(Some(64 << 20), Some(16 << 20)).derived_limits(), Some((16 << 20, Some(56 << 20))));
        assert_eq!(f(None, Some(1 << 20)).derived_limits(), None);
        assert_eq!(f(Some(4 << 20), None).derived_limits(), None);
    }

    #[test]
    fn on_v2_the_soft_line_stays_a_sixteenth_under_memory_high() {
        let f = |limit, high| Found { version: Version::V2, dir: PathBuf::new(), limit, high };
        // memory.high throttles: background reclaim works under it.
        assert_eq!(
            f(Some(128 << 20), Some(100 << 20)).derived_limits(),
            Some(((100 << 20) * 15 / 16, Some(120 << 20)))
        );
        assert_eq!(f(Some(1 << 30), Some(1040 << 20)).derived_limits(), Some((960 << 20, Some(960 << 20))));
        assert_eq!(f(Some(384 << 20), None).derived_limits(), Some((312 << 20, Some(360 << 20))));
        // memory.high alone: a soft line, no hard one.
        assert_eq!(f(None, Some(100 << 20)).derived_limits(), Some(((100 << 20) * 15 / 16, None)));
        // v1's soft limit throttles nothing: taken as it is, and alone it
        // gives nothing.
        let v1 = Found { version: Version::V1, ..f(Some(128 << 20), Some(100 << 20)) };
        assert_eq!(v1.derived_limits(), Some((100 << 20, Some(120 << 20))));
        assert_eq!(Found { limit: None, ..v1 }.derived_limits(), None);
    }

    #[test]
    fn only_the_always_mode_of_transparent_huge_pages_counts() {
        assert!(thp_always(b"[always] madvise never\n"));
        assert!(!thp_always(b"always [madvise] never\n"));
        assert!(!thp_always(b"always madvise [never]\n"));
        assert!(!thp_always(b"always"));
        assert!(!thp_always(b"\xff[always"));
    }

    /// A fake cgroup tree on disk: `root/memory/a/b` with limits at `a` and `b`.
    fn fixture(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("shrinkalloc-cgroup-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, content) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        root
    }

    #[test]
    fn v1_tree_gives_the_smallest_limit_on_the_way_up() {
        let root = fixture(
            "v1",
            &[
                ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory/a/memory.limit_in_bytes", "402653184\n"),
                ("memory/a/b/memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory/a/b/memory.soft_limit_in_bytes", "garbage\n"),
            ],
        );
        let mountinfo = format!("30 22 0:26 / {}/memory rw - cgroup cgroup rw,memory\n", root.display());
        let found = discover_from(b"4:memory:/a/b\n0::/\n", mountinfo.as_bytes()).unwrap();
        assert_eq!(found.version, Version::V1);
        assert!(found.dir.as_bytes().ends_with(b"/memory/a/b"));
        assert_eq!(found.limit, Some(384 << 20));
        assert_eq!(found.high, None);
        assert_eq!(found.derived_limits(), Some((312 << 20, Some(360 << 20))));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn v2_tree_with_high_and_max_and_a_hybrid_v1_beside_it() {
        let root = fixture(
            "v2",
            &[
                ("unified/svc/memory.max", "max\n"),
                ("unified/svc/memory.high", "209715200\n"),
                ("unified/memory.max", "536870912\n"),
                ("memory/memory.limit_in_bytes", "1048576\n"),
            ],
        );
        let mountinfo = format!(
            "30 22 0:26 / {r}/memory rw - cgroup cgroup rw,memory\n31 22 0:27 / {r}/unified rw - cgroup2 cgroup2 rw\n",
            r = root.display()
        );
        let found = discover_from(b"4:memory:/\n0::/svc\n", mountinfo.as_bytes()).unwrap();
        assert_eq!(found.version, Version::V2);
        // The mount's own root is a floor too: its memory.max counts.
        assert_eq!(found.limit, Some(512 << 20));
        assert_eq!(found.high, Some(200 << 20));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn read_key_finds_keys_across_reads_and_skips_overlong_lines() {
        let path = std::env::temp_dir().join(format!("shrinkalloc-stat-{}", std::process::id()));
        // A line of two reads' length whose tail would read as a line of
        // its own, `inactive_file 1`, were the rest of it not skipped.
        let mut text = "y".repeat(1024);
        text.push_str("inactive_file 1\ninactive_file 4096\n");
        for i in 0..200 {
            text.push_str(&format!("key_{i} {i}\n"));
        }
        text.push_str("total_inactive_file 8192\ngarbage \u{fffd}\nlast 7");
        std::fs::write(&path, &text).unwrap();
        let c = PathBuf::c_path(path.to_str().unwrap().as_bytes()).unwrap();
        assert_eq!(read_key(&c, b"key_0"), Ok(Some(0)));
        assert_eq!(read_key(&c, b"key_150"), Ok(Some(150)), "a key past the first read");
        assert_eq!(read_key(&c, b"inactive_file"), Ok(Some(4096)), "not the tail of the long line");
        assert_eq!(read_key(&c, b"total_inactive_file"), Ok(Some(8192)));
        assert_eq!(read_key(&c, b"last"), Ok(Some(7)), "the last line has no newline");
        assert_eq!(read_key(&c, b"missing"), Ok(None));
        std::fs::remove_file(&path).unwrap();
        let gone = PathBuf::c_path(b"/nonexistent/memory.stat").unwrap();
        assert_eq!(read_key(&gone, b"x"), Err(libc::ENOENT));
    }

    #[test]
    fn missing_files_and_missing_mounts_give_none_not_a_crash() {
        assert!(discover_from(b"0::/x\n", b"").is_none());
        assert!(discover_from(b"", b"31 22 0:27 / /nonexistent rw - cgroup2 cgroup2 rw\n").is_none());
        assert!(discover_from(b"\xff\xfe", b"\xff \xff - \xff").is_none());
        // The real machine: never a crash, whatever it has.
        let _ = discover();
    }
}
