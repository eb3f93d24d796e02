//! A thread put to sleep where it cannot run the allocator: blocked in
//! `read(2)` on a pipe, which allocates nothing, until another thread wakes
//! it, and a way for that other thread to know it is blocked there.
//!
//! The tests of memory freed into the pages of a sleeping owner need the
//! owner truly asleep while the other thread frees and purges. An owner
//! that sends its blocks and then waits on a channel is not: after the
//! send it still runs, and std's channel allocates its wait context the
//! first time a thread blocks. That allocation is a slow path, which
//! collects the pages freed so far and gives them back itself, while the
//! other thread purges: `blocks_of_a_sleeping_owner` found 4 MiB still
//! committed after the purge in one CI run (and 8 runs in 300 when looped
//! here), all of it given back by the owner a moment later.
//!
//! Each test binary uses only part of this module.
#![allow(dead_code)]

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sleeping side, moved into the thread that sleeps.
pub struct Bed {
    fd: i32,
    tid: Arc<AtomicI32>,
}

/// The waking side. Dropped without [`Alarm::wake`], it wakes the sleeper
/// too (end of file), as when a test fails before waking it.
pub struct Alarm {
    fd: i32,
    bed_fd: i32,
    tid: Arc<AtomicI32>,
}

/// A bed and its alarm, joined by a pipe.
pub fn bed() -> (Bed, Alarm) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe2` writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    let tid = Arc::new(AtomicI32::new(0));
    (Bed { fd: fds[0], tid: Arc::clone(&tid) }, Alarm { fd: fds[1], bed_fd: fds[0], tid })
}

impl Bed {
    /// Blocks the calling thread in `read(2)` until the alarm wakes it.
    /// Returns whether it was woken by [`Alarm::wake`] (false: the alarm
    /// was dropped).
    pub fn sleep(self) -> bool {
        // SAFETY: gettid has no preconditions.
        self.tid.store(unsafe { libc::gettid() }, Ordering::Release);
        let mut byte = 0u8;
        loop {
            // SAFETY: reads at most one byte into `byte`, from our pipe.
            let n = unsafe { libc::read(self.fd, (&raw mut byte).cast(), 1) };
            match n {
                1 => return true,
                0 => return false,
                _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
                _ => panic!("read from the alarm's pipe: {}", std::io::Error::last_os_error()),
            }
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

impl Alarm {
    /// Returns once the sleeper is blocked in its `read(2)`, as the kernel
    /// reports it (`/proc/self/task/TID/syscall`: the call's number and
    /// first argument, the bed's descriptor). Panics after 30 s.
    pub fn wait_asleep(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tid = self.tid.load(Ordering::Acquire);
            if tid != 0 && self.blocked_in_read(tid) {
                return;
            }
            assert!(Instant::now() < deadline, "the sleeper (tid {tid}) never blocked in read(2) for 30 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn blocked_in_read(&self, tid: i32) -> bool {
        let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else { return false };
        let mut fields = text.split_whitespace();
        let nr = fields.next().and_then(|f| f.parse::<i64>().ok());
        let fd = fields.next().and_then(|f| i64::from_str_radix(f.trim_start_matches("0x"), 16).ok());
        nr == Some(libc::SYS_read) && fd == Some(i64::from(self.bed_fd))
    }

    /// Wakes the sleeper.
    pub fn wake(self) {
        // SAFETY: writes one byte from a local, to our pipe.
        let n = unsafe { libc::write(self.fd, [1u8].as_ptr().cast(), 1) };
        assert_eq!(n, 1, "write to the bed's pipe: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}
