//! shrinkalloc: a fast allocator that gives memory back under pressure.
//!
//! # Architecture
//!
//! Memory comes from the OS in 4 MiB *segments* aligned to their size, so
//! that any block pointer finds its segment by masking (`segment.rs`). A
//! process-wide byte map records which 4 MiB regions are ours, so `free` can
//! tell a foreign pointer from one of ours. A segment is cut into *pages* of
//! one kind (64 KiB small, 128 KiB medium, 2 MiB large); each page
//! holds blocks of one *size class* (`size_class.rs`, 4 classes per power of
//! two, at most 20% internal waste above 128 bytes). Blocks larger than the
//! biggest class get a *huge* segment of their own (`huge.rs`).
//!
//! Every thread owns a *heap* (`heap.rs`) with a queue of pages per class
//! (`page_queue.rs`). The allocation fast path pops a block from the first
//! page of the class's queue (`alloc.rs`); the free fast path pushes it onto
//! that page's local free list (`free.rs`). Neither takes a lock or an
//! atomic read-modify-write. A block freed by another thread goes onto the
//! page's atomic cross-thread list, which the owner collects on its slow
//! path (`page.rs`). Pages come from, and go back to, the heap's segments
//! (`page_alloc.rs`); `realloc.rs` decides where a resized block goes.
//!
//! A thread that exits *abandons* its heap with all its pages; the next new
//! thread *adopts* it (`thread.rs`). `fork()` leaves the child with every
//! heap but its own abandoned, so nothing waits on a thread that is gone.
//!
//! Pages that become empty go back to their segment and are returned to the
//! OS (`madvise`) after a delay, or at once on [`purge()`] and under pressure
//! (`purge.rs`). Empty segments wait in a small cache before being unmapped.
//! Counters live on slow paths only (`stats.rs`).
//!
//! The layers, each importing only those before it: `os`, `lock`,
//! `size_class`, `options` (primitives) → `commit` (the one seam to
//! reclaim: the core commits memory through it, reclaim installs its slow
//! path there) → `page` → `page_queue` → `segment` → `huge` → `heap` →
//! `page_alloc` → `thread` → `purge` → `alloc` → `free` → `realloc` →
//! `stats`, `check` → `raw`, `global` (the API). `reclaim` sits above the
//! core and reaches down; the core reaches reclaim only through `commit`
//! (and `thread`, the process start, installs it there). `lockdep`, the
//! opt-in reclaim lockdep, sits beside `reclaim` the same way: it watches a
//! heap (`Heap::watched`) and the core calls its check through `commit`'s
//! watcher seam; `sync` holds the locks annotated for it.
//!
//! Use it as the global allocator:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: shrinkalloc::ShrinkAlloc = shrinkalloc::ShrinkAlloc;
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! println!("{}", shrinkalloc::stats());
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

mod alloc;
pub mod cache;
pub mod check;
mod commit;
pub mod delegate;
mod fork;
mod free;
mod global;
mod heap;
mod huge;
mod lock;
pub mod lockdep;
pub mod options;
mod os;
mod page;
mod page_alloc;
mod page_queue;
mod purge;
pub mod raw;
mod realloc;
pub mod reclaim;
mod segment;
mod size_class;
mod stats;
pub mod sync;
mod thread;

pub use global::ShrinkAlloc;
pub use purge::purge;
pub use stats::{stats, Stats};

// Reclaim: the names a program registering shrinkers and marking scopes uses.
pub use reclaim::{
    nofs, noio, register, with_nofs, with_noio, CountResult, Level, Needs, ScanResult, ShrinkControl, Shrinker,
    ShrinkerHandle, ShrinkerOptions,
};
