//! Links `libshrinkalloc.so` with `hot.ld`: the code every process runs,
//! placed together so that fewer pages of the library's text are mapped
//! (see the script's comment).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=hot.ld");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{dir}/hot.ld");
}
