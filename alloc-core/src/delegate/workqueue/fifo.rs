//! A work queue's items and the FIFO that holds them: nodes are allocated
//! fallibly before a class lock is taken, and the FIFO only moves them, so
//! nothing under the lock allocates.

use core::ffi::c_void;
use std::alloc::{alloc, Layout};
use std::time::Instant;

use super::SubmitError;
use crate::delegate::context::Context;

/// What an item runs: a Rust closure, or a C function and its argument.
pub(super) enum Work {
    Boxed(Box<dyn FnOnce() + Send>),
    C { f: unsafe extern "C" fn(*mut c_void), arg: *mut c_void },
}

// SAFETY: a `C` item's argument crosses to a worker only because the caller
// of `submit_c` promised it may (its `# Safety`); closures are `Send`.
unsafe impl Send for Work {}

impl Work {
    pub(super) fn run(self) {
        match self {
            Work::Boxed(f) => f(),
            // SAFETY: `submit_c`'s caller promised that calling `f(arg)` once,
            // on any thread, is sound; the queue calls it exactly once.
            Work::C { f, arg } => unsafe { f(arg) },
        }
    }
}

pub(super) struct Item {
    pub(super) work: Work,
    pub(super) ctx: Context,
    /// Submission order within the class; `flush` waits on it.
    pub(super) seq: u64,
    pub(super) queued_at: Instant,
}

pub(super) struct Node {
    next: Option<Box<Node>>,
    pub(super) item: Item,
}

/// A node for `item`, from a fallible allocation: under a hard limit a
/// submission fails with `NoMemory` instead of aborting.
pub(super) fn new_node(item: Item) -> Result<Box<Node>, SubmitError> {
    let layout = Layout::new::<Node>();
    // SAFETY: `Node` is not zero-sized.
    let p = unsafe { alloc(layout) }.cast::<Node>();
    if p.is_null() {
        return Err(SubmitError::NoMemory);
    }
    // SAFETY: `p` is a fresh, aligned allocation of `Node`'s layout from the
    // global allocator, which is exactly what a `Box<Node>` owns and frees.
    unsafe {
        p.write(Node { next: None, item });
        Ok(Box::from_raw(p))
    }
}

/// A FIFO of owned nodes: push and pop move nodes and never allocate.
///
/// Invariant: `tail` is null iff `head` is `None`, else it points to the
/// last node of the list `head` owns; `len` counts the nodes.
pub(super) struct Fifo {
    head: Option<Box<Node>>,
    tail: *mut Node,
    pub(super) len: usize,
}

// SAFETY: `tail` points into the list the `Fifo` owns and moves with it; it
// is only used through `&mut Fifo`, under the class lock.
unsafe impl Send for Fifo {}

impl Fifo {
    pub(super) const fn new() -> Self {
        Fifo { head: None, tail: core::ptr::null_mut(), len: 0 }
    }

    pub(super) fn push(&mut self, mut node: Box<Node>) {
        node.next = None;
        let raw: *mut Node = &mut *node;
        if self.tail.is_null() {
            self.head = Some(node);
        } else {
            // SAFETY: by the invariant, a non-null `tail` is the last node of
            // our list, alive and reachable only through `&mut self`.
            unsafe { (*self.tail).next = Some(node) };
        }
        self.tail = raw;
        self.len += 1;
    }

    pub(super) fn pop(&mut self) -> Option<Box<Node>> {
        let mut node = self.head.take()?;
        self.head = node.next.take();
        if self.head.is_none() {
            self.tail = core::ptr::null_mut();
        }
        self.len -= 1;
        Some(node)
    }

    pub(super) fn front_seq(&self) -> Option<u64> {
        self.head.as_ref().map(|n| n.item.seq)
    }

    /// Takes out the node of submission `seq`; O(n), moves nodes only.
    pub(super) fn remove(&mut self, seq: u64) -> Option<Box<Node>> {
        let mut kept = Fifo::new();
        let mut found = None;
        while let Some(n) = self.pop() {
            if found.is_none() && n.item.seq == seq {
                found = Some(n);
            } else {
                kept.push(n);
            }
        }
        *self = kept;
        found
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        // One node at a time: the default drop of a long list recurses.
        while self.pop().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64) -> Box<Node> {
        let mut n = new_node(Item {
            work: Work::Boxed(Box::new(|| {})),
            ctx: Context::NORMAL,
            seq: 0,
            queued_at: Instant::now(),
        })
        .unwrap();
        n.item.seq = seq;
        n
    }

    #[test]
    fn fifo_keeps_order_and_removes_one() {
        let mut q = Fifo::new();
        for s in 0..5 {
            q.push(item(s));
        }
        assert_eq!(q.remove(2).map(|n| n.item.seq), Some(2));
        assert!(q.remove(9).is_none());
        q.push(item(5));
        let order: Vec<u64> = core::iter::from_fn(|| q.pop().map(|n| n.item.seq)).collect();
        assert_eq!(order, [0, 1, 3, 4, 5]);
        assert!(q.tail.is_null() && q.len == 0);
    }
}
