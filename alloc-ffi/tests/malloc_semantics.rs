//! The malloc family keeps glibc's C semantics (errno, zero sizes,
//! `realloc(p, 0)`, alignment rules, usable sizes, errno preserved by
//! `free`), whether preloaded or linked, dynamically or statically.

mod common;

use common::{assert_success, compile, output, preloaded, Link};

fn check(link: Link) {
    let bin = compile("malloc_semantics.c", link, &[]);
    let o = match link {
        Link::Plain => output(&mut preloaded(&bin)),
        _ => output(&mut std::process::Command::new(&bin)),
    };
    assert_success(&o, &format!("malloc_semantics ({link:?})"));
    assert_eq!(common::stdout(&o), format!("ok {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn malloc_family_follows_glibc_semantics_when_preloaded() {
    check(Link::Plain);
}

#[test]
fn malloc_family_follows_glibc_semantics_when_linked_dynamically() {
    check(Link::Dynamic);
}

#[test]
fn malloc_family_follows_glibc_semantics_when_linked_statically() {
    check(Link::Static);
}
