//! Eight threads of random malloc/calloc/aligned_alloc/realloc/free, every
//! block stamped and verified, blocks freed by threads other than their
//! allocator's, and threads exiting with live blocks: preloaded, and linked
//! statically.

mod common;

use common::{assert_success, compile, output, preloaded, Link};

const SEED: &str = "20261125";
const ROUNDS: &str = "4";

#[test]
fn threads_free_each_others_blocks_without_corruption_when_preloaded() {
    let bin = compile("threads_stress.c", Link::Plain, &[]);
    let o = output(preloaded(&bin).args([SEED, ROUNDS]));
    assert_success(&o, "threads_stress (preloaded)");
    assert_eq!(common::stdout(&o), "ok\n");
}

#[test]
fn threads_free_each_others_blocks_without_corruption_when_linked_statically() {
    let bin = compile("threads_stress.c", Link::Static, &[]);
    let o = output(std::process::Command::new(&bin).args([SEED, ROUNDS]));
    assert_success(&o, "threads_stress (static)");
    assert_eq!(common::stdout(&o), "ok\n");
}
