//! The monitor belongs to the process that started it. A `fork()` child
//! inherits none of its thread and none of its descriptors (the atfork
//! handler closes them before the child's code runs), and starts a monitor
//! of its own once it allocates; the parent's monitor keeps its watch.
//!
//! The watch here is a FIFO named by `MEMORY_PRESSURE_WATCH` (no cgroup or
//! root needed), so the monitor's descriptor can be found in
//! `/proc/self/fd`. Runs in a child process: the environment is read when
//! the monitor starts.

mod pressure_support;
mod reclaim_support;

use std::ffi::CString;
use std::time::Duration;

use pressure_support::{report, run_child, scratch_dir, CHILD, MIB};
use reclaim_support::wait_until;
use shrinkalloc::reclaim::{self, Source, SourceState};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const TEST: &str = "fork_child_gets_no_inherited_watch_and_starts_its_own_monitor";
const FIFO_VAR: &str = "SHRINKALLOC_TEST_FIFO";

#[test]
fn fork_child_gets_no_inherited_watch_and_starts_its_own_monitor() {
    if std::env::var(CHILD).is_ok() {
        child();
        return;
    }
    let fifo = scratch_dir().join("watch.fifo");
    let _ = std::fs::remove_file(&fifo);
    let c = CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let f = fifo.to_str().unwrap();
    // The watch alone no longer starts a monitor (issue 15: no thread a
    // program did not ask for): `SHRINKALLOC_MONITOR=on` asks.
    let env = [
        ("MEMORY_PRESSURE_WATCH", Some(f)),
        (FIFO_VAR, Some(f)),
        ("SHRINKALLOC_CGROUP", Some("off")),
        ("SHRINKALLOC_MONITOR", Some("on")),
    ];
    let out = run_child(TEST, "fork", &env, None, Duration::from_secs(30));
    let _ = std::fs::remove_file(&fifo);
    eprintln!("child in {:?}:\n{}", out.elapsed, out.stdout);
    assert!(out.status.success(), "{}", out.output());
    let r = out.report();
    assert_eq!(r.num("parent_watches"), 1, "the parent's monitor holds the FIFO: {}", out.output());
    assert_eq!(r.num("parent_monitors"), 1, "{}", out.output());
    assert_eq!(r.num("child_watches_at_fork"), 0, "the fork child inherited the watch: {}", out.output());
    assert_eq!(r.num("child_monitors_at_fork"), 0, "{}", out.output());
    assert_eq!(r.num("child_watches_later"), 1, "the fork child's own monitor never watched: {}", out.output());
    assert_eq!(r.num("child_monitors_later"), 1, "{}", out.output());
    assert_eq!(r.num("parent_watches_after"), 1, "the child's fork handler closed the parent's watch");
    pressure_support::remove_scratch_dir();
}

/// Descriptors of this process open on `path`.
fn fds_on(path: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return 0 };
    dir.flatten().filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_str() == Some(path))).count()
}

/// Threads of this process named `sa-monitor`.
fn monitors() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let named = |e: &std::fs::DirEntry| std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
    dir.flatten().filter(|e| named(e).trim() == "sa-monitor").count()
}

fn systemd_state() -> SourceState {
    reclaim::stats().sources.iter().find(|x| x.source == Source::SystemdWatch).unwrap().state
}

fn child() {
    let fifo = std::env::var(FIFO_VAR).unwrap();
    // `SHRINKALLOC_MONITOR=on` arms the monitor at start-up: a few MiB more start it.
    let warm = vec![1u8; 16 * MIB];
    assert!(wait_until(Duration::from_secs(5), || systemd_state() == SourceState::Active), "{}", reclaim::stats());
    let (parent_watches, parent_monitors) = (fds_on(&fifo), monitors());
    let mut pipe = [0i32; 2];
    // SAFETY: `pipe` is a valid array of two descriptors.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child below only reads /proc, allocates, and exits with
    // `_exit`; the allocator's and the monitor's fork handlers leave it a
    // working allocator.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let at_fork = (fds_on(&fifo), monitors());
        let more = vec![2u8; 16 * MIB];
        let started = wait_until(Duration::from_secs(5), || monitors() == 1 && fds_on(&fifo) == 1);
        let later = (fds_on(&fifo), monitors());
        let msg = [at_fork.0 as u8, at_fork.1 as u8, later.0 as u8, later.1 as u8, started as u8];
        // SAFETY: `msg` is a valid buffer; the pipe's write end is ours.
        unsafe { libc::write(pipe[1], msg.as_ptr().cast(), msg.len()) };
        drop(more);
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(0) };
    }
    let mut msg = [0u8; 5];
    // SAFETY: `msg` is a valid buffer; the pipe's read end is ours.
    let n = unsafe { libc::read(pipe[0], msg.as_mut_ptr().cast(), msg.len()) };
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(n, 5, "the fork child reported nothing (status {status})");
    report(&[
        ("parent_watches", parent_watches.to_string()),
        ("parent_monitors", parent_monitors.to_string()),
        ("child_watches_at_fork", msg[0].to_string()),
        ("child_monitors_at_fork", msg[1].to_string()),
        ("child_watches_later", msg[2].to_string()),
        ("child_monitors_later", msg[3].to_string()),
        ("parent_watches_after", fds_on(&fifo).to_string()),
    ]);
    drop(warm);
}
