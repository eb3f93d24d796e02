//! The README's `sa_lru` example is a complete program: taken from
//! README.md as it stands, it compiles against the header without a
//! warning, links with the library, caches 1000 objects, and gives some
//! back when reclaim asks.

mod common;

use std::process::Command;

use common::{assert_success, include_dir, lib_dir, output, require, scratch, shared_lib, stdout};

/// The C block of README.md that starts with `/* lru_example.c`.
fn example() -> String {
    let readme = std::fs::read_to_string(common::crate_dir().join("../README.md")).expect("read README.md");
    let start = readme.find("```c\n/* lru_example.c").expect("README.md has the sa_lru example") + "```c\n".len();
    let len = readme[start..].find("```").expect("the example's block ends");
    readme[start..start + len].to_string()
}

#[test]
fn readme_sa_lru_example_compiles_and_gives_objects_back_under_reclaim() {
    require("cc");
    let dir = scratch("readme");
    let src = dir.join("lru_example.c");
    std::fs::write(&src, example()).unwrap();
    let bin = dir.join("lru_example");
    let o = output(
        Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pthread", "-I"])
            .arg(include_dir())
            .arg(&src)
            .arg("-o")
            .arg(&bin)
            .arg(shared_lib())
            .arg(format!("-Wl,-rpath,{}", lib_dir().display())),
    );
    assert_success(&o, "cc lru_example.c");
    let o = output(&mut Command::new(&bin));
    assert_success(&o, "lru_example");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"1000 cached, hit 1"), "{out}");
    assert!(lines.get(1).is_some_and(|l| l.starts_with("fewer cached")), "{out}");
}
