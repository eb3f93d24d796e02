//! Flusher mode: the calling thread and every thread it starts through the
//! library afterwards (spawn, work-queue items) run in a `NOIO` context;
//! the kernel is asked for `PR_SET_IO_FLUSHER` and its answer is what the
//! return value says (checked with `PR_GET_IO_FLUSHER`); leaving the mode
//! puts everything back.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use shrinkalloc::reclaim::{
    current_scope, is_io_flusher, set_io_flusher, spawn, with_noio, Context, ContextClass, ScopeFlags, WorkQueue,
};

#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;

/// `PR_GET_IO_FLUSHER` from `<linux/prctl.h>`.
const PR_GET_IO_FLUSHER: libc::c_int = 58;

/// The kernel's view of the calling thread: `Some(on)`, or `None` on a
/// kernel without the prctl.
fn kernel_says() -> Option<bool> {
    let z: libc::c_ulong = 0;
    // SAFETY: PR_GET_IO_FLUSHER reads a task flag; the arguments must be zero.
    let rc = unsafe { libc::prctl(PR_GET_IO_FLUSHER, z, z, z, z) };
    (rc >= 0).then_some(rc == 1)
}

#[test]
fn flusher_mode_puts_the_thread_and_its_helpers_in_noio() {
    // A thread of its own: the test harness reuses threads.
    thread::spawn(|| {
        let wq = WorkQueue::new("flusher", 1);
        let kernel = set_io_flusher(true);
        eprintln!("set_io_flusher(true): {kernel:?} (kernel says {:?})", kernel_says());
        match kernel {
            Ok(()) => assert_eq!(kernel_says(), Some(true)),
            Err(e) => {
                assert!(e.errno() == libc::EPERM || e.errno() == libc::EINVAL, "{e}");
                assert_ne!(kernel_says(), Some(true), "Err although the kernel took it");
            }
        }
        assert!(is_io_flusher());
        assert_eq!(current_scope(), ScopeFlags::NOIO, "the library's part is in force either way");
        assert!(set_io_flusher(true).is_ok() == kernel.is_ok(), "idempotent");
        let ctx = Context::capture();
        assert!(ctx.is_io_flusher());
        assert_eq!(ctx.class(), ContextClass::Noio);

        let child = spawn(|| (current_scope(), is_io_flusher(), kernel_says()));
        let (scope, flusher, child_kernel) = child.join().unwrap();
        assert_eq!(scope, ScopeFlags::NOIO);
        assert!(flusher, "a spawned thread is a flusher too");
        if kernel.is_ok() {
            assert_eq!(child_kernel, Some(true), "the kernel flag is inherited");
        }
        let leave = spawn(|| {
            let _ = set_io_flusher(false);
            current_scope()
        });
        assert_eq!(leave.join().unwrap(), ScopeFlags::NONE, "a spawned flusher can leave the mode");

        let (tx, rx) = mpsc::channel();
        wq.submit(move || tx.send(current_scope()).unwrap()).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), ScopeFlags::NOIO);
        wq.flush();
        assert_eq!(wq.stats().class(ContextClass::Noio).run, 1, "ran on a NOIO worker");
        assert_eq!(wq.stats().class(ContextClass::Normal).workers, 0);

        let _ = set_io_flusher(false);
        assert!(!is_io_flusher());
        assert_eq!(current_scope(), ScopeFlags::NONE);
        if kernel.is_ok() {
            assert_eq!(kernel_says(), Some(false));
        }
        assert_eq!(spawn(current_scope).join().unwrap(), ScopeFlags::NONE);
    })
    .join()
    .unwrap();
}

#[test]
fn leaving_flusher_mode_keeps_an_outer_noio_scope() {
    thread::spawn(|| {
        with_noio(|| {
            let _ = set_io_flusher(true);
            let _ = set_io_flusher(false);
            assert_eq!(current_scope(), ScopeFlags::NOIO, "the NOIO scope entered before is still in force");
        });
        assert_eq!(current_scope(), ScopeFlags::NONE);
        let _ = set_io_flusher(false);
        assert_eq!(current_scope(), ScopeFlags::NONE, "leaving when not in the mode changes nothing");
    })
    .join()
    .unwrap();
}
