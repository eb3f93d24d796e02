//! A child forked while other threads allocate has a working allocator: it
//! frees blocks those (now absent) threads allocated, allocates and frees a
//! lot on its own thread and on a new one, and exits cleanly; it never hangs
//! on a lock a vanished thread held at the fork.
//!
//! The parent forks several times at random moments; a child that has not
//! exited after [`WATCHDOG`] is killed and the test fails. The child reports
//! a failure on stderr and through its exit status.

mod common;

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{random_align, random_size, Block, How, Rng, MIB};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

const WORKERS: usize = 3;
const FORKS: u64 = 12;
const MAX_SIZE: usize = 4 * MIB;
const WATCHDOG: Duration = Duration::from_secs(20);

/// Blocks the workers leave for others to free. The parent holds its lock
/// across `fork`, so that no worker holds it in the child.
type Handoff = Mutex<Vec<Block>>;

/// Allocation churn: `ops` random allocations, frees and reallocs over a
/// small table, trading blocks through `handoff` when given one.
fn churn(rng: &mut Rng, ops: usize, handoff: Option<&Handoff>, stop: Option<&AtomicBool>) {
    let mut table: Vec<Option<Block>> = (0..256).map(|_| None).collect();
    for n in 0..ops {
        if n % 1024 == 0 && stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        let i = rng.below(table.len());
        table[i] = match table[i].take() {
            None => {
                let how = if rng.one_in(4) { How::Aligned } else { How::Global };
                let size = random_size(rng, MAX_SIZE);
                Some(Block::new(size, random_align(rng), how, rng.one_in(16), rng.next_u64()))
            }
            Some(b) => match (rng.below(4), handoff) {
                (0, _) => {
                    let new_size = random_size(rng, MAX_SIZE);
                    Some(b.realloc(new_size))
                }
                (1, Some(h)) => {
                    let mut shared = h.lock().unwrap();
                    shared.push(b);
                    let n = shared.len();
                    (n > 64).then(|| shared.swap_remove(rng.below(n)))
                }
                _ => {
                    b.free();
                    None
                }
            },
        };
        if rng.one_in(20_000) {
            shrinkalloc::purge();
        }
    }
    for b in table.into_iter().flatten() {
        b.free();
    }
}

/// Runs in the child: never returns, exits with 0 on success.
fn child(handoff: MutexGuard<'_, Vec<Block>>, seed: u64, fork: u64) -> ! {
    let result = panic::catch_unwind(AssertUnwindSafe(|| child_work(handoff, seed, fork)));
    let code = match result {
        Ok(()) => 0,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("panic");
            // The test harness captures this thread's output and would drop
            // it in the child: write to the inherited stderr directly.
            let line = format!("fork child {fork} failed: {msg}\n");
            // SAFETY: writes a live buffer to fd 2, which the child inherited.
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            3
        }
    };
    // SAFETY: `_exit` ends the child without running the parent's atexit
    // handlers or the rest of the test harness.
    unsafe { libc::_exit(code) }
}

fn child_work(mut handoff: MutexGuard<'_, Vec<Block>>, seed: u64, fork: u64) {
    // Blocks of threads that do not exist in the child.
    for b in handoff.drain(..) {
        b.free();
    }
    drop(handoff);
    let ops = if cfg!(debug_assertions) { 10_000 } else { 60_000 };
    let mut rng = Rng::new(seed, 100 + fork);
    churn(&mut rng, ops, None, None);
    let helpers: Vec<_> = (0..2)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = Rng::new(seed, 200 + fork * 2 + t);
                churn(&mut rng, ops / 2, None, None);
            })
        })
        .collect();
    churn(&mut rng, ops / 2, None, None);
    for h in helpers {
        h.join().expect("child's thread failed");
    }
    let stats = shrinkalloc::stats();
    assert!(stats.committed <= stats.mapped, "child stats: {stats}");
    shrinkalloc::purge();
}

/// Waits for `pid`, killing it after [`WATCHDOG`]; returns its wait status.
fn wait_with_watchdog(pid: libc::pid_t) -> Result<libc::c_int, String> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a live out-parameter.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(status);
        }
        assert_eq!(r, 0, "waitpid failed: {}", std::io::Error::last_os_error());
        if start.elapsed() > WATCHDOG {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above; reaps the killed child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            return Err(format!("child {pid} still running after {WATCHDOG:?}: killed"));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn fork_child_allocates() {
    let seed = common::seed();
    let stop = Arc::new(AtomicBool::new(false));
    let handoff: Arc<Handoff> = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|t| {
            let (stop, handoff) = (Arc::clone(&stop), Arc::clone(&handoff));
            thread::spawn(move || {
                let mut rng = Rng::new(seed, t as u64);
                churn(&mut rng, usize::MAX, Some(&handoff), Some(&stop));
            })
        })
        .collect();
    let mut rng = Rng::new(seed, 1_000);
    for fork in 0..FORKS {
        thread::sleep(Duration::from_millis(rng.range(1, 30) as u64));
        // Keep some allocation going on this thread too, up to the fork.
        let mine = Block::new(random_size(&mut rng, MIB), 64, How::Global, false, rng.next_u64());
        let guard = handoff.lock().unwrap();
        std::io::stderr().flush().unwrap();
        // SAFETY: the child only runs `child`, which ends in `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        if pid == 0 {
            child(guard, seed, fork);
        }
        drop(guard);
        mine.free();
        let status = match wait_with_watchdog(pid) {
            Ok(status) => status,
            Err(msg) => {
                stop.store(true, Ordering::Relaxed);
                panic!("fork {fork}: {msg} (a lock held at fork time?)");
            }
        };
        let exited_ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        if !exited_ok {
            stop.store(true, Ordering::Relaxed);
        }
        assert!(
            exited_ok,
            "fork {fork}: child ended with {} (status {status:#x})",
            if libc::WIFSIGNALED(status) {
                format!("signal {}", libc::WTERMSIG(status))
            } else {
                format!("exit code {}", libc::WEXITSTATUS(status))
            }
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    for b in handoff.lock().unwrap().drain(..) {
        b.free();
    }
}
