//! The `sa_*` API from a C program built against the header, linked
//! dynamically and statically: scopes nest and NOIO implies NOFS, reclaim
//! from a NOFS/NOIO scope skips the shrinkers that need the filesystem or
//! I/O, a hard limit reclaims and then fails with ENOMEM, a shrinker can
//! unregister itself from inside `scan`, and bad arguments set errno.

mod common;

use common::{assert_success, compile, output, Link};

fn run(link: Link) {
    let bin = compile("sa_api.c", link, &[]);
    let o = output(&mut std::process::Command::new(&bin));
    assert_success(&o, &format!("sa_api ({link:?})"));
    assert_eq!(common::stdout(&o), "ok\n");
}

#[test]
fn sa_api_keeps_its_contract_when_linked_dynamically() {
    run(Link::Dynamic);
}

#[test]
fn sa_api_keeps_its_contract_when_linked_statically() {
    run(Link::Static);
}
