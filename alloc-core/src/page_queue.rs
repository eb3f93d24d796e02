//! Page queues: the doubly linked lists of pages a heap keeps, one per size
//! class plus the full list.
//!
//! Invariant: a page is on at most one queue; `head`/`tail` and the pages'
//! `own.next`/`own.prev` links agree. Only the thread owning the heap
//! touches a queue or those links, so they are `Cell`s reached through
//! shared references: reclaim may re-enter the heap between two queue
//! operations, and no `&mut` is ever alive across that.

use core::cell::Cell;
use core::ptr;

use crate::page::Page;

/// A doubly linked list of pages.
pub struct PageQueue {
    /// First page (allocation happens here).
    pub head: Cell<*mut Page>,
    /// Last page.
    pub tail: Cell<*mut Page>,
}

impl PageQueue {
    /// An empty queue.
    pub const fn new() -> PageQueue {
        PageQueue { head: Cell::new(ptr::null_mut()), tail: Cell::new(ptr::null_mut()) }
    }

    /// First page, or null.
    #[inline(always)]
    pub fn head(&self) -> *mut Page {
        self.head.get()
    }

    /// Puts `page` first.
    ///
    /// # Safety
    ///
    /// `page` and every page on the queue are live page records owned by the
    /// calling thread's heap; `page` is on no queue.
    pub unsafe fn push_front(&self, page: *mut Page) {
        // SAFETY: the caller promises `page` is live and ours.
        let own = unsafe { &(*page).own };
        let head = self.head.get();
        own.prev.set(ptr::null_mut());
        own.next.set(head);
        if head.is_null() {
            self.tail.set(page);
        } else {
            // SAFETY: the queue's pages are live and ours (caller promise).
            unsafe { (*head).own.prev.set(page) };
        }
        self.head.set(page);
    }

    /// Puts `page` last: where a page that only just got a free block waits
    /// until the pages before it are used up.
    ///
    /// # Safety
    ///
    /// As for [`push_front`](Self::push_front).
    pub unsafe fn push_back(&self, page: *mut Page) {
        // SAFETY: the caller promises `page` is live and ours.
        let own = unsafe { &(*page).own };
        let tail = self.tail.get();
        own.next.set(ptr::null_mut());
        own.prev.set(tail);
        if tail.is_null() {
            self.head.set(page);
        } else {
            // SAFETY: the queue's pages are live and ours (caller promise).
            unsafe { (*tail).own.next.set(page) };
        }
        self.tail.set(page);
    }

    /// Takes `page` off the queue.
    ///
    /// # Safety
    ///
    /// `page` is on this queue; the queue's pages are live and owned by the
    /// calling thread's heap.
    pub unsafe fn remove(&self, page: *mut Page) {
        // SAFETY: the caller promises `page` is live and ours.
        let own = unsafe { &(*page).own };
        let (prev, next) = (own.prev.get(), own.next.get());
        if prev.is_null() {
            self.head.set(next);
        } else {
            // SAFETY: a neighbour on the queue is live and ours.
            unsafe { (*prev).own.next.set(next) };
        }
        if next.is_null() {
            self.tail.set(prev);
        } else {
            // SAFETY: a neighbour on the queue is live and ours.
            unsafe { (*next).own.prev.set(prev) };
        }
        own.next.set(ptr::null_mut());
        own.prev.set(ptr::null_mut());
    }
}
