//! A pointer the allocator cannot have handed out, or one freed twice where
//! the design can tell, is reported in one line on stderr and the process
//! dies of SIGABRT: never silent corruption.

mod common;

use common::{assert_aborted_with, compile, output, preloaded, Link};

fn run(mode: &str) -> std::process::Output {
    let bin = compile("bad_pointers.c", Link::Plain, &[]);
    output(preloaded(&bin).arg(mode))
}

#[test]
fn free_of_a_stack_pointer_aborts_with_a_message() {
    assert_aborted_with(&run("free-stack"), "free(): pointer not allocated by shrinkalloc", "free-stack");
}

#[test]
fn free_of_a_static_pointer_aborts_with_a_message() {
    assert_aborted_with(&run("free-static"), "free(): pointer not allocated by shrinkalloc", "free-static");
}

#[test]
fn free_of_an_interior_pointer_aborts_with_a_message() {
    assert_aborted_with(&run("free-interior"), "free(): invalid pointer", "free-interior");
    assert_aborted_with(&run("free-interior-huge"), "free(): invalid pointer", "free-interior-huge");
}

#[test]
fn double_free_of_a_block_whose_page_was_released_aborts() {
    assert_aborted_with(&run("double-free-trimmed"), "free(): ", "double-free-trimmed");
}

#[test]
fn double_free_of_a_huge_block_aborts() {
    assert_aborted_with(&run("double-free-huge"), "free(): ", "double-free-huge");
}

#[test]
fn realloc_of_a_stack_pointer_aborts_with_a_message() {
    assert_aborted_with(&run("realloc-stack"), "realloc(): pointer not allocated by shrinkalloc", "realloc-stack");
}

#[test]
fn usable_size_of_a_foreign_pointer_aborts_with_a_message() {
    assert_aborted_with(
        &run("usable-size-static"),
        "malloc_usable_size(): pointer not allocated by shrinkalloc",
        "usable-size-static",
    );
}
