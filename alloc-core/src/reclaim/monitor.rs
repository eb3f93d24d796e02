//! The monitor: one library thread per process that waits for the
//! kernel's pressure notifications, reads the memory cgroup's usage, and
//! turns each into a raise (`pressure.rs`): a request to the background
//! reclaimers. It never runs a reclaim pass itself.
//!
//! It starts lazily, from `charge`'s slow path with no lock held, never
//! while the allocator initialises: at the next slow path after the first
//! shrinker is registered (the program has opted in: its caches should
//! hear of pressure), or, with `SHRINKALLOC_MONITOR=on`, once a few MiB
//! more than at start-up are committed; `off` never. A program that
//! registered no shrinker and did not ask gets no thread of the library's
//! (neither this one nor the background reclaimers, [`threads_allowed`]):
//! its allocation slow paths read the group's usage at a bounded rate
//! themselves (`pressure.rs`), and a program that must stay single-threaded
//! (`unshare(CLONE_NEWUSER)`, a sandbox counting threads) stays so. It is
//! a raw pthread whose first act is to mark itself `RECLAIMING` and
//! background, so nothing it allocates ever reclaims.
//! It sets its sources up in its own thread, so the slow path only spawns:
//!
//! - cgroup v1: an eventfd on `memory.usage_in_bytes` thresholds at the
//!   group's soft line, halfway to the hard line, and the hard line; an
//!   eventfd per `memory.pressure_level` level (on a machine without swap
//!   these fire only with the OOM killer: the thresholds are the warning);
//! - cgroup v2: `memory.events`, whose change raises `POLLPRI`;
//! - PSI: triggers on the process's unified group's `memory.pressure`
//!   (present even on a hybrid machine whose memory controller is v1), else
//!   on `/proc/pressure/memory`; or, when systemd set
//!   `MEMORY_PRESSURE_WATCH`, that file, FIFO or socket instead, with the
//!   trigger from `MEMORY_PRESSURE_WRITE`;
//! - the group's usage, every 100 ms while its working set is past half
//!   the soft line, else every second.
//!
//! Invariant: the monitor belongs to the process that started it
//! (`RUNNING` holds its pid). A `fork()` child closes the inherited
//! descriptors in its atfork handler — `FDS` lists every descriptor the
//! monitor holds, and `fork.rs` holds `FDS`'s lock across the fork, which set-up holds
//! across each open, so the list is complete — and arms a fresh start. The
//! monitor allocates nothing while holding `FDS`, and blocks only in `poll`.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use super::cgroup::{Events, PathBuf, Version};
use super::limit;
use super::pressure;
use super::psi::{self, PsiTrigger, StallKind};
use super::scope::{self, Reclaiming, ScopeFlags};
use super::shrinker::Level;
use super::sources::{self, Source, SourceState};
use super::usage::{self, Group};
use crate::lock::{SpinGuard, SpinLock};
use crate::os::{self, FileKind};

/// Descriptors the monitor may hold at once.
const MAX_WATCHES: usize = 8;
/// Committed bytes past those at start-up (or fork) before the monitor starts.
pub(crate) const ARM_BYTES: usize = 4 << 20;
/// Usage read period while the working set is past half the soft line.
const NEAR_MS: i32 = 100;
/// Usage read period otherwise.
const FAR_MS: i32 = 1000;
/// After an event, a descriptor other than the usage thresholds rests this
/// long (its notifications pile up in the kernel meanwhile): v1
/// `pressure_level` fires on every reclaim window, hundreds of times a
/// second in a group that streams files, and a source raises at most this
/// often anyway.
const QUIET_MS: u64 = 250;

/// The PSI triggers written when systemd gives none, and the level each
/// raises. 2 s windows: the only ones a process without `CAP_SYS_RESOURCE`
/// may use.
const PSI_TRIGGERS: [(PsiTrigger, Level); 2] = [
    (PsiTrigger { kind: StallKind::Some, stall_us: 150_000, window_us: 2_000_000 }, Level::Medium),
    (PsiTrigger { kind: StallKind::Full, stall_us: 100_000, window_us: 2_000_000 }, Level::Critical),
];

/// `SHRINKALLOC_MONITOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Auto = 1,
    On = 2,
    Off = 3,
}

/// 0 until read, then a `Mode`.
static MODE: AtomicU8 = AtomicU8::new(0);
/// The pid of the process whose monitor runs (or is starting), or 0.
static RUNNING: AtomicU32 = AtomicU32::new(0);
/// Set when the first shrinker is registered, never cleared.
static OPTED_IN: AtomicBool = AtomicBool::new(false);
/// Every descriptor the monitor holds, by watch slot (-1: none). Held
/// across `fork()` (`fork.rs`, where the lock order is).
pub(crate) static FDS: SpinLock<[i32; MAX_WATCHES]> = SpinLock::new([-1; MAX_WATCHES]);

fn mode() -> Mode {
    // Relaxed here and below: the mode is a pure function of the
    // environment (a bad value is reported once by `options`).
    match MODE.load(Ordering::Relaxed) {
        1 => return Mode::Auto,
        2 => return Mode::On,
        3 => return Mode::Off,
        _ => {}
    }
    // The choices are `auto`, `on` and `off`, in that order.
    let mode = match crate::options::env_choice(crate::options::Var::Monitor) {
        1 => Mode::On,
        2 => Mode::Off,
        _ => Mode::Auto,
    };
    MODE.store(mode as u8, Ordering::Relaxed);
    mode
}

/// systemd's watch, unless unset or empty.
fn systemd_watch() -> Option<&'static [u8]> {
    os::getenv(b"MEMORY_PRESSURE_WATCH\0").filter(|w| !w.is_empty())
}

/// Called once while the limits are first read: the committed bytes past
/// which the monitor should start, if it should start on its own
/// (`SHRINKALLOC_MONITOR=on`; otherwise only a shrinker starts it).
pub(crate) fn start_at_init() -> Option<usize> {
    match mode() {
        Mode::Off => sources::set_state(Source::Monitor, SourceState::Off),
        Mode::On => return Some(crate::stats::committed().saturating_add(ARM_BYTES)),
        Mode::Auto => {}
    }
    None
}

/// Whether the library may run threads of its own in this process: a
/// shrinker was registered (they serve it) or `SHRINKALLOC_MONITOR=on`.
/// Otherwise pressure is handled on the program's own slow paths.
pub(crate) fn threads_allowed() -> bool {
    // Relaxed: a flag that only ever goes up; a stale `false` handles one
    // more pressure reading in the allocating thread.
    OPTED_IN.load(Ordering::Relaxed) || mode() == Mode::On
}

/// Whether the program registered a shrinker (ever): it then opted in to
/// reclaim, refusals at its group's real limit included (`mod.rs`).
pub(crate) fn opted_in() -> bool {
    // Relaxed: see `threads_allowed`.
    OPTED_IN.load(Ordering::Relaxed)
}

/// A shrinker was registered: its caches should hear of pressure, so the
/// monitor starts at the next slow path (unless it is off or running), and
/// the background reclaimers may start.
pub(crate) fn want() {
    // Relaxed: see `threads_allowed`.
    OPTED_IN.store(true, Ordering::Relaxed);
    // Relaxed: a stale pid only arms a start that `start` then declines.
    if mode() != Mode::Off && RUNNING.load(Ordering::Relaxed) != std::process::id() {
        limit::arm_wake(0);
    }
}

/// Starts the monitor of this process if it is due (called from `charge`'s
/// slow path with no lock held, never inside reclaim).
pub(crate) fn start() {
    if !limit::disarm_wake() {
        return;
    }
    let pid = std::process::id();
    // Relaxed: RUNNING only elects the starter; the thread reads its state
    // from `pressure`, whose own locks order it.
    let seen = RUNNING.load(Ordering::Relaxed);
    if seen == pid || RUNNING.compare_exchange(seen, pid, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    // Creating a thread allocates: never let that reclaim or start the
    // monitor again.
    let _r = Reclaiming::enter();
    sources::set_state(Source::Monitor, SourceState::Active);
    // SAFETY: the thread takes no argument.
    if !unsafe { os::spawn_detached(monitor_main, ptr::null_mut()) } {
        sources::set_state(Source::Monitor, SourceState::Failed(libc::EAGAIN));
    }
}

extern "C" fn monitor_main(_: *mut c_void) -> *mut c_void {
    // First: nothing this thread allocates may reclaim or wait.
    scope::become_background_reclaimer(ScopeFlags::NONE);
    os::set_thread_name(c"sa-monitor");
    let mut m = Monitor { watches: [None; MAX_WATCHES], events: Events::default() };
    m.set_up();
    m.run();
    // Nothing (left) to watch.
    sources::set_state(Source::Monitor, SourceState::Missing);
    ptr::null_mut()
}

/// What a descriptor is watched for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    /// A v1 usage-threshold eventfd.
    Threshold,
    /// A v1 `memory.pressure_level` eventfd of this level.
    PressureLevel(Level),
    /// A v2 `memory.events` file.
    Events,
    /// A PSI file armed with a trigger raising this level.
    Psi(Level),
    /// systemd's watch, of this kind.
    Systemd(FileKind),
}

impl What {
    fn poll_events(self) -> i16 {
        match self {
            What::Threshold | What::PressureLevel(_) => libc::POLLIN,
            What::Events | What::Psi(_) | What::Systemd(FileKind::Regular) => libc::POLLPRI,
            What::Systemd(_) => libc::POLLIN,
        }
    }
}

#[derive(Clone, Copy)]
struct Watch {
    fd: i32,
    what: What,
    /// Not polled before this time (ms): see `QUIET_MS`.
    quiet_until: u64,
}

struct Monitor {
    watches: [Option<Watch>; MAX_WATCHES],
    /// `memory.events` as last read.
    events: Events,
}

type Fds<'a> = SpinGuard<'a, [i32; MAX_WATCHES]>;

/// Text for a control file, built without allocating.
struct Text {
    buf: [u8; 128],
    len: usize,
}

impl Text {
    fn new() -> Self {
        Text { buf: [0; 128], len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> &mut Self {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self
    }

    fn num(&mut self, v: u64) -> &mut Self {
        self.put(super::psi::decimal(v, &mut [0; 20]))
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Registers a v1 event: `EVENTFD CONTROL_FD ARGS` into `cgroup.event_control`.
fn register_v1_event(g: &Group, efd: i32, cfd: i32, args: &[u8]) -> Result<(), i32> {
    let ctl = g.dir.file(b"cgroup.event_control").ok_or(libc::ENAMETOOLONG)?;
    let mut line = Text::new();
    line.num(efd as u64).put(b" ").num(cfd as u64).put(b" ").put(args);
    let fd = os::open(ctl.as_bytes(), libc::O_WRONLY)?;
    let r = os::write_fd(fd, line.as_bytes());
    os::close(fd);
    r.map(drop)
}

/// Clears an eventfd's counter (non-blocking).
fn drain(fd: i32) {
    let mut buf = [0u8; 8];
    let _ = os::read_fd(fd, &mut buf);
}

/// Reads and discards what a FIFO or socket holds; `false` at end of file.
fn discard(fd: i32) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match os::read_fd(fd, &mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(libc::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

fn read_events(fd: i32) -> Option<Events> {
    let mut buf = [0u8; 256];
    let n = os::pread_start(fd, &mut buf).ok()?;
    Events::parse(&buf[..n])
}

impl Monitor {
    /// Takes a watch slot for `fd`, recorded in the fork list; closes `fd`
    /// when no slot is left.
    fn add(&mut self, fds: &mut Fds<'_>, what: What, fd: i32) -> Result<usize, i32> {
        let Some(slot) = self.watches.iter().position(Option::is_none) else {
            os::close(fd);
            return Err(libc::EMFILE);
        };
        fds[slot] = fd;
        self.watches[slot] = Some(Watch { fd, what, quiet_until: 0 });
        Ok(slot)
    }

    /// Closes the watch in `slot`, if any.
    fn close_slot(&mut self, fds: &mut Fds<'_>, slot: usize) {
        if let Some(w) = self.watches[slot].take() {
            os::close(w.fd);
            fds[slot] = -1;
        }
    }

    /// Closes every watch `keep` says no to.
    fn remove(&mut self, fds: &mut Fds<'_>, keep: impl Fn(What) -> bool) {
        for slot in 0..MAX_WATCHES {
            if self.watches[slot].is_some_and(|w| !keep(w.what)) {
                self.close_slot(fds, slot);
            }
        }
    }

    fn count(&self, f: impl Fn(What) -> bool) -> usize {
        self.watches.iter().flatten().filter(|w| f(w.what)).count()
    }

    /// Opens every source, recording what became of each.
    fn set_up(&mut self) {
        let group = usage::group();
        let mut fds = FDS.lock();
        let (v1, v2) = match group {
            Some(&g) if g.version == Version::V1 => (Some(g), None),
            Some(&g) => (None, Some(g)),
            None => (None, None),
        };
        let state = |r: Result<(), i32>| r.map_or_else(SourceState::from_errno, |()| SourceState::Active);
        let missing = SourceState::Missing;
        if let Some(g) = v1 {
            set_file_path(Source::V1Threshold, &g, b"memory.usage_in_bytes");
            set_file_path(Source::V1PressureLevel, &g, b"memory.pressure_level");
        }
        let r = v1.map_or(missing, |g| state(self.v1_thresholds(&mut fds, &g)));
        sources::set_state(Source::V1Threshold, r);
        let r = v1.map_or(missing, |g| state(self.v1_pressure_level(&mut fds, &g)));
        sources::set_state(Source::V1PressureLevel, r);
        if let Some(g) = v2 {
            set_file_path(Source::V2Events, &g, b"memory.events");
        }
        let r = v2.map_or(missing, |g| state(self.v2_events(&mut fds, &g)));
        sources::set_state(Source::V2Events, r);
        let systemd = self.systemd(&mut fds);
        sources::set_state(Source::SystemdWatch, systemd);
        let psi = if systemd == SourceState::Active { SourceState::Off } else { self.psi(&mut fds) };
        sources::set_state(Source::Psi, psi);
    }

    /// v1 usage thresholds at the group's soft line, halfway to the hard
    /// line and the hard line, all on one eventfd.
    fn v1_thresholds(&mut self, fds: &mut Fds<'_>, g: &Group) -> Result<(), i32> {
        let (soft, hard) = (g.lines.soft().unwrap_or(0) as u64, g.lines.hard().unwrap_or(0) as u64);
        let efd = os::eventfd()?;
        self.add(fds, What::Threshold, efd)?;
        let usage = g.dir.file(b"memory.usage_in_bytes").ok_or(libc::ENAMETOOLONG);
        let r = usage.and_then(|p| os::open(p.as_bytes(), libc::O_RDONLY)).and_then(|ufd| {
            let mut r = Ok(());
            for line in [soft, soft + (hard - soft.min(hard)) / 2, hard] {
                let mut arg = Text::new();
                arg.num(line);
                r = r.and_then(|()| register_v1_event(g, efd, ufd, arg.as_bytes()));
            }
            os::close(ufd);
            r
        });
        if r.is_err() {
            self.remove(fds, |w| w != What::Threshold);
        }
        r
    }

    /// v1 `memory.pressure_level`: an eventfd per level.
    fn v1_pressure_level(&mut self, fds: &mut Fds<'_>, g: &Group) -> Result<(), i32> {
        let path = g.dir.file(b"memory.pressure_level").ok_or(libc::ENAMETOOLONG)?;
        let levels: [(&[u8], Level); 3] =
            [(b"low", Level::Low), (b"medium", Level::Medium), (b"critical", Level::Critical)];
        for (word, level) in levels {
            let r = os::eventfd().and_then(|efd| {
                self.add(fds, What::PressureLevel(level), efd)?;
                let pfd = os::open(path.as_bytes(), libc::O_RDONLY)?;
                let r = register_v1_event(g, efd, pfd, word);
                os::close(pfd);
                r
            });
            if r.is_err() {
                self.remove(fds, |w| !matches!(w, What::PressureLevel(_)));
                return r;
            }
        }
        Ok(())
    }

    /// v2 `memory.events`, read once now for its counters.
    fn v2_events(&mut self, fds: &mut Fds<'_>, g: &Group) -> Result<(), i32> {
        let path = g.dir.file(b"memory.events").ok_or(libc::ENAMETOOLONG)?;
        let fd = os::open(path.as_bytes(), libc::O_RDONLY)?;
        self.events = read_events(fd).unwrap_or_default();
        self.add(fds, What::Events, fd).map(drop)
    }

    /// PSI triggers on the unified group's `memory.pressure`, else on the
    /// system's; active if at least one trigger was accepted.
    fn psi(&mut self, fds: &mut Fds<'_>) -> SourceState {
        let group_file = super::cgroup::unified_dir().and_then(|d| d.file(b"memory.pressure"));
        let path = match group_file {
            Some(p) if os::file_kind(p.as_bytes()).is_ok() => p,
            _ => match PathBuf::c_path(b"/proc/pressure/memory") {
                Some(p) => p,
                None => return SourceState::Missing,
            },
        };
        sources::set_path(Source::Psi, path.as_bytes());
        let mut first_error = None;
        for (trigger, level) in PSI_TRIGGERS {
            let mut text = [0u8; PsiTrigger::TEXT_MAX];
            let r = os::open(path.as_bytes(), libc::O_RDWR | libc::O_NONBLOCK).and_then(|fd| {
                let slot = self.add(fds, What::Psi(level), fd)?;
                os::write_fd(fd, trigger.format(&mut text)).inspect_err(|_| self.close_slot(fds, slot))
            });
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) if self.count(|w| matches!(w, What::Psi(_))) == 0 => SourceState::from_errno(e),
            _ => SourceState::Active,
        }
    }

    /// systemd's `MEMORY_PRESSURE_WATCH`: a PSI file (`POLLPRI`), a FIFO or
    /// a Unix socket (`POLLIN`), with `MEMORY_PRESSURE_WRITE` (base64)
    /// written to it first; `/dev/null` turns pressure watching off.
    fn systemd(&mut self, fds: &mut Fds<'_>) -> SourceState {
        let Some(watch) = systemd_watch() else { return SourceState::Missing };
        if watch == b"/dev/null" {
            return SourceState::Off;
        }
        sources::set_path(Source::SystemdWatch, watch);
        let mut raw = [0u8; 256];
        let write = match os::getenv(b"MEMORY_PRESSURE_WRITE\0") {
            None => None,
            Some(b64) => match psi::decode_base64(b64, &mut raw) {
                Some(d) => Some(d),
                None => return SourceState::Failed(libc::EINVAL),
            },
        };
        let Some(cpath) = PathBuf::c_path(watch) else { return SourceState::Failed(libc::ENAMETOOLONG) };
        let r = os::file_kind(cpath.as_bytes()).and_then(|kind| {
            let fd = match kind {
                FileKind::Regular | FileKind::Fifo => os::open(cpath.as_bytes(), libc::O_RDWR | libc::O_NONBLOCK)?,
                FileKind::Socket => os::connect_unix(watch)?,
                FileKind::Other => return Err(libc::EINVAL),
            };
            os::set_nonblocking(fd);
            let slot = self.add(fds, What::Systemd(kind), fd)?;
            // A PSI file without a trigger reports an error on every poll:
            // write ours when systemd gave none.
            let mut text = [0u8; PsiTrigger::TEXT_MAX];
            let data = match write {
                Some(d) => Some(d),
                None if kind == FileKind::Regular => Some(PSI_TRIGGERS[0].0.format(&mut text)),
                None => None,
            };
            if let Some(d) = data.filter(|d| !d.is_empty()) {
                os::write_fd(fd, d).inspect_err(|_| self.close_slot(fds, slot))?;
            }
            Ok(())
        });
        r.map_or_else(SourceState::from_errno, |()| SourceState::Active)
    }

    /// Waits for events and reads the usage until nothing is left to watch.
    fn run(&mut self) {
        loop {
            let group = usage::group();
            if group.is_none() && self.count(|_| true) == 0 {
                return;
            }
            let usage_period = match group {
                None => -1,
                Some(g) if usage::last_working_set() >= g.lines.soft().unwrap_or(0) as u64 / 2 => NEAR_MS,
                Some(_) => FAR_MS,
            };
            // The monitor also runs the decay's global tick, so an idle
            // process still gives memory back.
            let decay = crate::purge::tick_period_ms().min(i32::MAX as u64) as i32;
            let mut timeout = if usage_period < 0 { decay } else { usage_period.min(decay) };
            let now = os::now_ms();
            let mut pfds = [libc::pollfd { fd: -1, events: 0, revents: 0 }; MAX_WATCHES];
            for (p, w) in pfds.iter_mut().zip(&self.watches) {
                match w {
                    Some(w) if w.quiet_until > now => {
                        let rest = (w.quiet_until - now) as i32;
                        timeout = if timeout < 0 { rest } else { timeout.min(rest) };
                    }
                    Some(w) => (p.fd, p.events) = (w.fd, w.what.poll_events()),
                    None => {}
                }
            }
            if let Err(e) = os::poll(&mut pfds, timeout) {
                if e != libc::EINTR {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
            for (slot, p) in pfds.iter().enumerate() {
                if p.revents != 0 {
                    self.handle(slot, p.revents);
                }
            }
            if group.is_some() {
                pressure::check_usage();
            }
            crate::purge::background_tick();
        }
    }

    /// One descriptor reported `revents`.
    fn handle(&mut self, slot: usize, revents: i16) {
        let Some(w) = self.watches[slot] else { return };
        if w.what != What::Threshold {
            if let Some(w) = &mut self.watches[slot] {
                w.quiet_until = os::now_ms() + QUIET_MS;
            }
        }
        let broken = revents & (libc::POLLERR | libc::POLLNVAL) != 0;
        match w.what {
            What::Threshold => {
                drain(w.fd);
                sources::note_event(Source::V1Threshold);
                match usage::read_now() {
                    Some(r) => {
                        pressure::raise(Source::V1Threshold, r.level, r.target);
                    }
                    // The group's files are gone (it was removed).
                    None => self.drop_where(|w| matches!(w, What::Threshold | What::PressureLevel(_))),
                }
            }
            What::PressureLevel(level) => {
                drain(w.fd);
                sources::note_event(Source::V1PressureLevel);
                pressure::raise_event(Source::V1PressureLevel, level);
            }
            What::Events => self.on_events(w.fd),
            What::Psi(_) if broken => {
                self.drop_where(|x| x == w.what);
                sources::set_state(Source::Psi, SourceState::Failed(libc::EIO));
            }
            What::Psi(level) => {
                sources::note_event(Source::Psi);
                pressure::raise_event(Source::Psi, level);
            }
            What::Systemd(kind) => {
                let eof = kind != FileKind::Regular && !discard(w.fd);
                if revents & (libc::POLLIN | libc::POLLPRI) != 0 && !broken {
                    sources::note_event(Source::SystemdWatch);
                    pressure::raise_event(Source::SystemdWatch, Level::Medium);
                }
                if broken || eof || revents & libc::POLLHUP != 0 {
                    self.drop_where(|x| x == w.what);
                    sources::set_state(Source::SystemdWatch, SourceState::Failed(libc::EPIPE));
                }
            }
        }
    }

    /// `memory.events` changed: `max`, `oom` or `oom_kill` grew → critical,
    /// `high` grew → medium.
    fn on_events(&mut self, fd: i32) {
        let Some(e) = read_events(fd) else { return };
        let old = core::mem::replace(&mut self.events, e);
        let level = if e.max > old.max || e.oom > old.oom || e.oom_kill > old.oom_kill {
            Level::Critical
        } else if e.high > old.high {
            Level::Medium
        } else {
            Level::None
        };
        if level > Level::None {
            sources::note_event(Source::V2Events);
            pressure::raise_event(Source::V2Events, level);
        }
    }

    fn drop_where(&mut self, f: impl Fn(What) -> bool) {
        let mut fds = FDS.lock();
        self.remove(&mut fds, |w| !f(w));
    }
}

fn set_file_path(src: Source, g: &Group, name: &[u8]) {
    if let Some(p) = g.dir.file(name) {
        sources::set_path(src, p.as_bytes());
    }
}

/// In a `fork()` child, once `fork.rs` released `FDS`: the child has no
/// monitor thread. Closes what the parent's monitor held (the numbers are
/// still ours here, before the child's code can reuse them) and arms a
/// start of its own.
pub(crate) fn after_fork_in_child() {
    let mut fds = FDS.lock();
    for fd in fds.iter_mut().filter(|fd| **fd >= 0) {
        os::close(*fd);
        *fd = -1;
    }
    drop(fds);
    // Relaxed: the child has one thread.
    let had = RUNNING.swap(0, Ordering::Relaxed) != 0;
    if had && sources::state(Source::Monitor) == SourceState::Active {
        for src in [Source::V1Threshold, Source::V1PressureLevel, Source::V2Events, Source::Psi, Source::SystemdWatch] {
            sources::set_state(src, SourceState::NotStarted);
        }
        limit::arm_wake_in_child(crate::stats::committed().saturating_add(ARM_BYTES));
    }
}
