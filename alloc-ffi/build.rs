//! Links `libshrinkalloc.so` with `hot.ld` (the code every process runs,
//! placed together so that fewer pages of the library's text are mapped;
//! see the script's comment) and with GCC's static unwinder, so that C
//! programs do not map `libgcc_s.so.1` for us.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=hot.ld");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{dir}/hot.ld");
    if let Some(eh) = static_unwinder() {
        link_static_unwinder(&eh);
    }
    if glibc_reads_relr() {
        // Relative relocations packed (DT_RELR): `.rela.dyn` 29 KiB -> 2 KiB,
        // which brings `.rodata` (the size-class tables every process reads)
        // into the first 64 KiB of the read-only segment, so the kernel's
        // fault-around maps one window of it instead of two.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the C library the target links is glibc 2.36 or later, whose
/// loader applies DT_RELR (it defines the `GLIBC_ABI_DT_RELR` version the
/// linker then makes the library need, so an older loader refuses the
/// library rather than leaving it unrelocated). Native GNU/Linux builds
/// only, like [`static_unwinder`].
fn glibc_reads_relr() -> bool {
    let Some(libc) = native_gnu_file("libc.so.6") else { return false };
    std::fs::read(libc).is_ok_and(|bytes| bytes.windows(17).any(|w| w == b"GLIBC_ABI_DT_RELR"))
}

/// `libgcc_eh.a`, where the target is the host's GNU/Linux and its C
/// compiler says where the archive is; `None` elsewhere (cross builds,
/// musl, no `cc`), and the library links `libgcc_s.so.1` as std asks.
fn static_unwinder() -> Option<PathBuf> {
    native_gnu_file("libgcc_eh.a")
}

/// Where the C compiler finds `name` when the target is the host's
/// GNU/Linux; `None` elsewhere or when it does not find it.
fn native_gnu_file(name: &str) -> Option<PathBuf> {
    let var = |key: &str| std::env::var(key).unwrap_or_default();
    let native = var("TARGET") == var("HOST");
    if !native || var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return None;
    }
    let out = Command::new("cc").arg(format!("-print-file-name={name}")).output().ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // An archive gcc cannot find comes back as the bare name.
    (out.status.success() && path.is_absolute() && path.is_file()).then_some(path)
}

/// Std's unwinder (its backtraces, and unwinding, which `panic = "abort"`
/// leaves unused) refers to `_Unwind_*`, for which std names
/// `libgcc_s.so.1`: 100 KiB of resident text and data in every process
/// that preloads us, a library mimalloc and glibc's malloc do not bring
/// (`benches/programs`: a program that only starts, 1,988 -> 1,848 KiB;
/// mimalloc 1,832). `libgcc_eh.a` defines the same symbols. Named as our
/// crate's own native library it comes on the link line ahead of std's
/// `-lgcc_s`, and the `-u`s make the linker take its objects there (our
/// code refers to none of them), so `-lgcc_s`, linked `--as-needed`, is
/// dropped. The symbols stay local to the library: a program's C++
/// exceptions still go through its own unwinder. `-bundle`: a C program
/// linking `libshrinkalloc.a` gets `-lgcc_eh` named among the native
/// libraries rather than the objects inside the archive.
fn link_static_unwinder(eh: &std::path::Path) {
    let dir = eh.parent().expect("an absolute path has a parent");
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    for sym in ["_Unwind_Resume", "_Unwind_Backtrace", "_Unwind_GetIPInfo"] {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-u,{sym}");
    }
}
