#!/bin/sh
# Installs the C library: libshrinkalloc.so and .a into PREFIX/lib, with
# libshrinkalloc_lockdep.so (reclaim lockdep's pthread interposer, compiled
# here with ${CC:-cc}), the header into PREFIX/include and shrinkalloc.pc
# into PREFIX/lib/pkgconfig, so that `pkg-config --cflags --libs shrinkalloc` works.
#
#   cargo build --release && alloc-ffi/install.sh [PREFIX [BUILD_DIR]]
#
# PREFIX defaults to /usr/local; BUILD_DIR, where cargo put the library, to
# ${CARGO_TARGET_DIR:-target}/release.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-/usr/local}
build=${2:-${CARGO_TARGET_DIR:-$root/target}/release}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)

for f in libshrinkalloc.so libshrinkalloc.a; do
    [ -f "$build/$f" ] || { echo "install.sh: $build/$f missing; run cargo build --release first" >&2; exit 1; }
done
install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 755 "$build/libshrinkalloc.so" "$prefix/lib/"
install -m 644 "$build/libshrinkalloc.a" "$prefix/lib/"
${CC:-cc} -shared -fPIC -O2 -o "$prefix/lib/libshrinkalloc_lockdep.so" "$root/alloc-ffi/lockdep/shrinkalloc_lockdep.c"
install -m 644 "$root/include/shrinkalloc.h" "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" "$root/alloc-ffi/shrinkalloc.pc.in" \
    > "$prefix/lib/pkgconfig/shrinkalloc.pc"
echo "installed shrinkalloc $version under $prefix"
