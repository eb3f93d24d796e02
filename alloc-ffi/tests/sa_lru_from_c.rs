//! `sa_lru` from a C program built against the header: walks take the
//! coldest nodes and obey every verdict, a node on another lru is refused,
//! a verdict outside the enum is reported and left, destroy waits for a
//! walk in flight and may be called from dispose, and four threads add,
//! delete and touch their objects (content checked throughout) while
//! reclaim and explicit walks run. Misuse that would corrupt the list
//! aborts with one line naming the lru.

mod common;

use common::{assert_aborted_with, assert_success, compile, output, stderr, stdout, Link};

fn run(link: Link) {
    let bin = compile("sa_lru.c", link, &[]);
    let o = output(&mut std::process::Command::new(&bin));
    assert_success(&o, &format!("sa_lru ({link:?})"));
    assert_eq!(stdout(&o), "ok\n");
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one report on stderr (the bad verdict), got:\n{err}");
    assert!(
        lines[0].starts_with("shrinkalloc: sa_lru 'order': isolate returned a value outside enum sa_lru_verdict"),
        "{}",
        lines[0]
    );
}

#[test]
fn sa_lru_keeps_its_contract_under_threads_linked_dynamically() {
    run(Link::Dynamic);
}

#[test]
fn sa_lru_keeps_its_contract_under_threads_linked_statically() {
    run(Link::Static);
}

#[test]
fn sa_lru_del_of_a_node_whose_neighbours_do_not_point_back_aborts_with_a_message() {
    let bin = compile("sa_lru.c", Link::Dynamic, &[]);
    let o = output(std::process::Command::new(&bin).arg("corrupt"));
    assert_aborted_with(&o, "sa_lru 'corrupt': sa_lru_del of a node whose links are corrupt: 0x", "corrupt node");
}

#[test]
fn sa_lru_add_from_isolate_aborts_instead_of_deadlocking() {
    let bin = compile("sa_lru.c", Link::Dynamic, &[]);
    let o = output(std::process::Command::new(&bin).arg("reenter"));
    assert_aborted_with(&o, "sa_lru 'reenter': sa_lru_add called from isolate (would deadlock): 0x", "reentry");
}
