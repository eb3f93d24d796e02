#!/bin/sh
# Callgrind instruction counts of alloc-ffi/lockdep/cost.c: instructions per
# iteration (malloc+free pair, or lock+unlock pair), start-up subtracted.
#
#   alloc-ffi/lockdep/cost.sh LIBDIR [BASE_LIBDIR]
#
# LIBDIR holds the libshrinkalloc.so to measure (target/release); with
# BASE_LIBDIR (another build's, e.g. of the commit before lockdep) the
# checker-off rows are measured against it too. Needs cc and valgrind.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
lib=$(cd "$1" && pwd)
base=${2:-}
tmp=$(mktemp -d)
cc -O2 -I"$here/../../include" "$here/cost.c" -o "$tmp/cost" -L"$lib" -lshrinkalloc -lpthread
cc -shared -fPIC -O2 -o "$tmp/libshrinkalloc_lockdep.so" "$here/shrinkalloc_lockdep.c"
ir() { # LIBDIR PRELOAD LOCKDEP ARGS...
    l=$1 p=$2 d=$3
    shift 3
    env LD_LIBRARY_PATH="$l" ${p:+LD_PRELOAD=$p} ${d:+SHRINKALLOC_LOCKDEP=$d} valgrind --tool=callgrind \
        --callgrind-out-file="$tmp/cg" "$tmp/cost" "$@" >/dev/null 2>&1
    sed -n 's/^summary: //p; s/^totals: //p' "$tmp/cg" | head -n 1
}
row() { # LABEL LIBDIR PRELOAD LOCKDEP MODE [learn]
    label=$1 l=$2 p=$3 d=$4 mode=$5
    shift 5
    start=$(ir "$l" "$p" "$d" none "$@")
    loop=$(ir "$l" "$p" "$d" "$mode" "$@")
    awk -v a="$loop" -v b="$start" -v t="$label" 'BEGIN { printf "%-58s %8.2f\n", t ":", (a - b) / 1000000 }'
}
P=$tmp/libshrinkalloc_lockdep.so
if [ -n "$base" ]; then
    row "malloc+free, before lockdep" "$base" "" "" malloc
    row "lock+unlock, before lockdep" "$base" "" "" lock
fi
row "malloc+free, checker off" "$lib" "" "" malloc
row "malloc+free, checker on, no lock held" "$lib" "$P" 1 malloc learn
row "malloc+free, checker on, holding a learned lock (NOFS)" "$lib" "$P" 1 malloc-held learn
row "lock+unlock, no interposer" "$lib" "" "" lock
row "lock+unlock, interposer, checker off" "$lib" "$P" "" lock
row "lock+unlock, interposer, checker on" "$lib" "$P" 1 lock learn
row "lock+unlock of a learned lock, checker on" "$lib" "$P" 1 lock-learned learn
rm -rf "$tmp"
