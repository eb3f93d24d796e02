//! Contexts and work queues from a C program with pthreads
//! (`tests/c/context_workqueue.c`), linked dynamically and statically: a
//! NOFS context adopted in another thread keeps reclaim there out of the
//! filesystem until restored; items run once each, in their submitter's
//! context, FIFO per class; flush waits and destroy drains; submit fails
//! with `ESHUTDOWN` once destroy has begun; flusher mode is NOIO whatever
//! the kernel answers. Each test runs one part of the program, which ends
//! itself with `alarm()` if it deadlocks.

mod common;

use std::process::Command;

use common::{assert_success, compile, output, stderr, stdout, Link};

fn run(part: &str) {
    for link in [Link::Dynamic, Link::Static] {
        let bin = compile("context_workqueue.c", link, &[]);
        let o = output(Command::new(&bin).arg(part));
        assert_success(&o, &format!("context_workqueue {part} ({link:?})"));
        assert_eq!(stdout(&o), "ok\n", "context_workqueue {part} ({link:?}); stderr:\n{}", stderr(&o));
        eprint!("{}", stderr(&o));
    }
}

#[test]
fn nofs_context_adopted_in_another_pthread_skips_fs_shrinkers_until_restored() {
    run("adopt");
}

#[test]
fn items_from_many_pthreads_run_once_in_their_own_context_fifo_per_class() {
    run("items");
}

#[test]
fn flush_waits_for_earlier_items_and_destroy_drains() {
    run("drain");
}

#[test]
fn submit_fails_with_eshutdown_once_destroy_has_begun() {
    run("shutdown");
}

#[test]
fn io_flusher_mode_is_noio_whatever_the_kernel_answers() {
    run("flusher");
}
