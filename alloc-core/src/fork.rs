//! Around `fork()`: every process-wide lock of the crate held across the
//! fork in one order, and what the child repairs before its code runs on.
//!
//! The handlers are registered once per process, at its first allocation
//! (`thread::init_process`), with one `pthread_atfork`. `prepare` takes the
//! locks below in their order; `parent` releases them; `child` releases
//! them and then repairs what the threads that did not survive left
//! behind, in this order: the heaps (every heap but the forking thread's is
//! abandoned, `thread.rs`), the shrinker registry (no callback in flight,
//! `reclaim/registry.rs`), the pressure monitor (its descriptors closed, a
//! fresh start armed, `reclaim/monitor.rs`).
//!
//! # Lock order
//!
//! Every lock that lives as long as the process, in the one order in which
//! any two are ever held together: a thread holding one takes only locks
//! further down the list.
//!
//! | # | lock | guards | taken while holding it |
//! |---|------|--------|------------------------|
//! | 1 | `reclaim::registry::REGISTRY` | the shrinker list (an `Arc` cloned or swapped) | none |
//! | 2 | `reclaim::monitor::FDS` | the monitor's descriptors, held across each open in its set-up | 3 (`cgroup::unified_dir`) |
//! | 3 | `reclaim::cgroup::BUFFERS` | the `/proc` texts discovery reads | none |
//! | 4 | `reclaim::cgroup::FOUND` | the cgroup found at start-up | none |
//! | 5 | `reclaim::limit::SETTER` | limit changes and the commit threshold | none |
//! | 6 | `thread::POOL` | the heaps (all, abandoned) | none |
//! | 7 | `segment::ALL` | every segment (the purger's and statistics' walks) | none |
//! | 8 | `segment::CACHE` | the empty-segment cache | none |
//! | 9 | `huge::HCACHE` | the cache of freed huge blocks | none |
//!
//! Reclaim's locks (1–5) and the allocator's (6–9) never nest: no holder of
//! either kind allocates, and the core calls reclaim (`commit.rs`) with no
//! lock held. Two kinds of lock are not held across a fork, because each
//! belongs to threads of one process and a child never takes its parent's:
//! the background reclaimers' `Worker::state` mutexes (the child starts
//! reclaimers of its own, keyed by pid, `reclaim/worker.rs`) and the work
//! queues' class mutexes (a child frees an inherited queue without waiting,
//! `delegate/workqueue/`).
//!
//! Invariant: the child starts with every lock above free and none of the
//! structures they guard half-changed, because `prepare` waited for each
//! holder to finish. The handlers allocate nothing and take no other lock.

use crate::reclaim::{cgroup, limit, monitor, registry};
use crate::{os, thread};

/// Registers the handlers; once per process (`thread::init_process`).
pub(crate) fn install() {
    os::at_fork(prepare, parent, child);
}

unsafe extern "C" fn prepare() {
    registry::REGISTRY.raw_lock();
    monitor::FDS.raw_lock();
    cgroup::BUFFERS.raw_lock();
    cgroup::FOUND.raw_lock();
    limit::SETTER.raw_lock();
    // SAFETY: called once, here, before `fork_parent` or `fork_child`;
    // takes locks 6 to 9 in order.
    unsafe { thread::fork_prepare() };
}

/// Releases reclaim's locks (5 down to 1).
///
/// # Safety
///
/// `prepare` took them in this process image, or in the parent image this
/// child is a copy of, and nobody released them since.
unsafe fn unlock_reclaim() {
    // SAFETY: caller promise, for each lock.
    unsafe {
        limit::SETTER.raw_unlock();
        cgroup::FOUND.raw_unlock();
        cgroup::BUFFERS.raw_unlock();
        monitor::FDS.raw_unlock();
        registry::REGISTRY.raw_unlock();
    }
}

unsafe extern "C" fn parent() {
    // SAFETY: `prepare` took every lock in this process image: the core
    // releases its own (9 down to 6), then reclaim's.
    unsafe {
        thread::fork_parent();
        unlock_reclaim();
    }
}

unsafe extern "C" fn child() {
    // SAFETY: `prepare` took every lock in the parent image, which this
    // child inherited with its only thread, this one: the core releases its
    // own and abandons the other threads' heaps, then reclaim's go.
    unsafe {
        thread::fork_child();
        unlock_reclaim();
    }
    crate::commit::after_fork_in_child();
    registry::after_fork_in_child();
    monitor::after_fork_in_child();
}
