//! A preloaded program can fork while other threads allocate; the child
//! allocates (threads included) and execs, and the new image is served by
//! shrinkalloc again.

mod common;

use common::{assert_success, compile, output, preloaded, Link};

#[test]
fn fork_during_allocation_then_exec_keeps_a_working_allocator() {
    let bin = compile("fork_exec.c", Link::Plain, &[]);
    let o = output(preloaded(&bin).arg("40"));
    assert_success(&o, "fork_exec");
    assert_eq!(common::stdout(&o), "ok\n");
}
