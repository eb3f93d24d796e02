//! `alloc-ffi/install.sh` installs the library, the header and a pkg-config
//! file with which a C program builds against the API and runs.

mod common;

use std::process::Command;

use common::{assert_success, crate_dir, lib_dir, output, require, scratch, shared_lib, stdout};

#[test]
fn installed_pkg_config_file_builds_a_working_c_program() {
    require("pkg-config");
    require("cc");
    shared_lib(); // built
    let prefix = scratch("install").join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    let o = output(Command::new("sh").arg(crate_dir().join("install.sh")).arg(&prefix).arg(lib_dir()));
    assert_success(&o, "install.sh");

    let pc_path = prefix.join("lib/pkgconfig");
    let o =
        output(Command::new("pkg-config").args(["--cflags", "--libs", "shrinkalloc"]).env("PKG_CONFIG_PATH", &pc_path));
    assert_success(&o, "pkg-config");
    let flags = stdout(&o);
    assert!(
        flags.contains("-lshrinkalloc") && flags.contains(&format!("-I{}", prefix.join("include").display())),
        "{flags}"
    );
    let o = output(Command::new("pkg-config").args(["--modversion", "shrinkalloc"]).env("PKG_CONFIG_PATH", &pc_path));
    assert_eq!(stdout(&o).trim(), env!("CARGO_PKG_VERSION"));

    let bin = scratch("install").join("header_check");
    let mut cc = Command::new("cc");
    cc.args(["-std=gnu11", "-Wall", "-Werror"])
        .arg(crate_dir().join("tests/c/header_check.c"))
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()))
        .arg("-o")
        .arg(&bin);
    assert_success(&output(&mut cc), "cc with pkg-config flags");
    let o = output(&mut Command::new(&bin));
    assert_success(&o, "header_check built through pkg-config");
    assert!(stdout(&o).ends_with("ok\n"));
}
