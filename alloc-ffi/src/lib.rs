//! The C ABI of shrinkalloc: `libshrinkalloc.so` and `libshrinkalloc.a`,
//! declared and documented in `include/shrinkalloc.h`.
//!
//! Exported, with glibc's semantics (so `LD_PRELOAD=libshrinkalloc.so` or
//! linking `-lshrinkalloc` before libc replaces the system allocator):
//! `malloc`, `calloc`, `realloc`, `reallocarray`, `free`, `free_sized`,
//! `free_aligned_sized`, `malloc_usable_size`, `malloc_trim` (`malloc.rs`);
//! `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`
//! (`aligned.rs`); the C++ `operator delete` family and `nothrow`
//! `operator new` under their mangled names (`cxx.rs`, not in the C
//! header). The `sa_*` API: scopes (`scope.rs`), shrinkers
//! (`shrinker.rs`), lru lists over a shrinker (`lru.rs`), contexts and
//! flusher mode (`context.rs`), work queues (`workqueue.rs`), limits and explicit reclaim (`reclaim.rs`), statistics
//! and version (`stats.rs`, which also prints the statistics at exit under
//! `SHRINKALLOC_STATS=1`), reclaim lockdep's annotations (`lockdep.rs`).
//! Every C-semantics decision of the malloc family (`errno`, overflow, zero sizes, alignment rules) is made in
//! `libc_semantics.rs` and nowhere else; the `sa_*` files keep their own
//! few argument checks next to the function they guard.
//!
//! This crate is a skin: each exported function is a one-line forward into
//! the core crate `shrinkalloc`, which owns every allocation decision
//! (`lru.rs` is the exception: the intrusive list of C nodes lives there,
//! over the core's shrinker registry). No path through it panics or allocates through a lock that allocation
//! needs; the release profile builds with `panic = "abort"`. The crate's own
//! Rust allocations go to the same allocator, directly.
#![deny(unsafe_op_in_unsafe_fn)]

mod aligned;
mod context;
mod cxx;
mod libc_semantics;
mod lockdep;
mod lru;
mod malloc;
mod reclaim;
mod scope;
mod shrinker;
mod stats;
mod workqueue;

/// The library's own Rust allocations (shrinker registrations, statistics
/// text) go straight to the core, not through the exported `malloc`.
#[global_allocator]
static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;
