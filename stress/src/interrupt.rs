//! Ctrl-C (and SIGTERM, SIGHUP) as a flag that the harness polls.
//!
//! The handler only sets an atomic flag: the runner sees it within one
//! sampling interval, kills its child and lets every cgroup's `Drop` remove
//! the group, so an interrupted run leaves nothing behind. The child, in the
//! same process group, may get the terminal's SIGINT too and die of it; the
//! runner treats that run as interrupted, not failed.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Relaxed: the runner polls the flag; nothing else is published.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed `sigaction` is a valid empty one; the handler is
        // async-signal-safe (one atomic store) and lives for the process.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// Whether a stop was asked for.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}
