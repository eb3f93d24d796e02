//! Delegation: work handed from one thread to another keeps the context it
//! was submitted in.
//!
//! - `context.rs`: a [`Context`] (the scope flags reclaim reads, and
//!   flusher mode) captured in one thread and adopted in another, and the
//!   library's `spawn`;
//! - `workqueue/`: a general executor ([`WorkQueue`]) that runs each item
//!   under its submitter's context, on workers kept apart per
//!   [`ContextClass`](crate::reclaim::ContextClass);
//! - `scope_future.rs`: a future adapter ([`ScopeExt`]) that polls a future
//!   in a context, so that a scope follows an async task across threads.
//!
//! This layer sits beside reclaim, above it: it reaches reclaim only
//! through its public scope API (`crate::reclaim::{nofs_save, ...,
//! ContextClass, with_reserve}`), and reclaim never imports it (it only
//! re-exports these names as `shrinkalloc::reclaim::{Context, WorkQueue,
//! spawn, ...}`, where programs and the C API have always found them).
//!
//! Invariant: nothing here lifts a restriction a thread is under: adopting
//! a context unions its flags with the thread's, and an item never runs on
//! a worker of a less restricted class than its context's.

pub mod context;
mod scope_future;
pub mod workqueue;

pub use context::{is_io_flusher, set_io_flusher, spawn, Context, ContextGuard, KernelRefused};
pub use scope_future::{ScopeExt, Scoped};
pub use workqueue::{ClassStats, SubmitError, WorkQueue, WorkQueueStats, MAX_THREADS_PER_CLASS};
