//! `include/shrinkalloc.h` and `libshrinkalloc.so` agree: the library
//! exports exactly the functions the header declares (the whole malloc
//! family among them), a C program that calls every declared function
//! compiles against the header and links both dynamically and statically,
//! and the header compiles as C99 and as C++.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{assert_success, compile, include_dir, output, require, scratch, shared_lib, static_lib, stdout, Link};

/// What a drop-in malloc must export (glibc's manual, "Replacing malloc").
const MALLOC_FAMILY: [&str; 12] = [
    "malloc",
    "free",
    "calloc",
    "realloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "malloc_usable_size",
    "malloc_trim",
    "reallocarray",
];

/// The C++ operators the library exports (`alloc-ffi/src/cxx.rs`): not in
/// the C header, so exempt from the comparison with it, and checked here.
const CXX_OPERATORS: [&str; 16] = [
    "_ZdaPv",
    "_ZdaPvRKSt9nothrow_t",
    "_ZdaPvSt11align_val_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvm",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPv",
    "_ZdlPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdlPvm",
    "_ZdlPvmSt11align_val_t",
    "_ZnamRKSt9nothrow_t",
    "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZnwmRKSt9nothrow_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t",
];

/// Functions defined in the dynamic symbol table of `lib`.
fn exported(lib: &std::path::Path) -> BTreeSet<String> {
    require("nm");
    let o = output(Command::new("nm").args(["-D", "--defined-only"]).arg(lib));
    assert_success(&o, "nm -D");
    stdout(&o)
        .lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "T" | "W", name] => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

/// Function names the header declares: every declaration line outside
/// comments and macros (`type name(params) [SA_LIBC_NOEXCEPT];`), struct
/// members of function-pointer type excepted.
fn declared() -> BTreeSet<String> {
    let header = std::fs::read_to_string(include_dir().join("shrinkalloc.h")).expect("read header");
    let mut names = BTreeSet::new();
    let mut in_comment = false;
    for line in header.lines().map(str::trim) {
        if in_comment {
            in_comment = !line.contains("*/");
            continue;
        }
        if line.starts_with("/*") {
            in_comment = !line.contains("*/");
            continue;
        }
        let is_decl = line.ends_with(");") || line.ends_with(") SA_LIBC_NOEXCEPT;");
        // A function-pointer struct member (`size_t (*count)(...);`) declares
        // no function; a function taking a callback parameter does.
        let is_member = line.find('(').is_some_and(|i| line[i + 1..].starts_with('*'));
        if line.starts_with('#') || !is_decl || is_member {
            continue;
        }
        let before_paren = &line[..line.find('(').expect("a declaration has parameters")];
        let name = before_paren.rsplit(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap();
        names.insert(name.to_string());
    }
    names
}

#[test]
fn library_exports_exactly_what_the_header_declares() {
    let mut exports = exported(&shared_lib());
    // The C++ operators are exempt from the header (C has no such names),
    // and must be exactly the ones `cxx.rs` defines.
    let cxx: BTreeSet<String> = exports.iter().filter(|s| s.starts_with("_Z")).cloned().collect();
    assert_eq!(cxx, CXX_OPERATORS.iter().map(|s| s.to_string()).collect(), "C++ operators exported");
    exports.retain(|s| !s.starts_with("_Z"));
    for f in MALLOC_FAMILY {
        assert!(exports.contains(f), "libshrinkalloc.so does not export {f}");
    }
    let decls = declared();
    assert!(decls.len() >= 25, "header parse found too few declarations: {decls:?}");
    assert_eq!(exports, decls, "exports (left) and header declarations (right) differ");
}

#[test]
fn a_program_calling_every_declared_function_links_dynamically_and_statically() {
    let decls = declared();
    for link in [Link::Dynamic, Link::Static] {
        let bin = compile("header_check.c", link, &[]);
        let o = output(&mut Command::new(&bin));
        assert_success(&o, &format!("header_check ({link:?})"));
        let out = stdout(&o);
        let mut lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.pop(), Some("ok"));
        let called: BTreeSet<String> = lines.iter().map(|s| s.to_string()).collect();
        assert_eq!(called, decls, "header_check.c must take every declared function ({link:?})");
    }
    // Statically linked, the program's own malloc is the library's.
    require("nm");
    let bin = compile("header_check.c", Link::Static, &[]);
    let syms = stdout(&output(Command::new("nm").arg(&bin)));
    assert!(
        syms.lines().any(|l| l.ends_with(" T malloc")),
        "static link did not take malloc from {}",
        static_lib().display()
    );
}

#[test]
fn header_compiles_as_c99_and_cpp() {
    require("cc");
    require("c++");
    let src = scratch("header").join("include_only.c");
    std::fs::write(&src, "#include <shrinkalloc.h>\nint main(void) { return sa_version() == 0; }\n").unwrap();
    for std in ["c99", "c11"] {
        let o = output(
            Command::new("cc")
                .args([&format!("-std={std}"), "-pedantic", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"])
                .arg(include_dir())
                .arg(&src),
        );
        assert_success(&o, &format!("header as {std}"));
    }
    for std in ["c++11", "c++17"] {
        let o = output(
            Command::new("c++")
                .args([
                    &format!("-std={std}"),
                    "-pedantic",
                    "-Wall",
                    "-Wextra",
                    "-Werror",
                    "-fsyntax-only",
                    "-x",
                    "c++",
                    "-I",
                ])
                .arg(include_dir())
                .arg(&src),
        );
        assert_success(&o, &format!("header as {std}"));
    }
}
