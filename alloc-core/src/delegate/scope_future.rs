//! Scopes across `.await`: a future that polls its inner future in a
//! context, so that the scope follows the task, not the thread.
//!
//! A `NOFS`/`NOIO` scope is per thread. An async task that holds a
//! filesystem lock across an await point may resume on another worker
//! thread of its runtime, which is not in the scope; and the thread it left
//! stays in it, running other tasks under a restriction that is not
//! theirs. [`ScopeExt::with_context`] (or [`ScopeExt::nofs`],
//! [`ScopeExt::noio`]) wraps a future so that every `poll`, and its drop,
//! runs with the context adopted ([`Context::adopt`]) and the thread's own
//! flags put back when it returns.
//!
//! Invariant: between two polls the worker thread's flags are exactly what
//! they were before the first (adopting unions, the guard restores); inside
//! a poll they include the context's, whichever thread polls.

use core::future::Future;
use core::mem::ManuallyDrop;
use core::pin::Pin;
use core::task::{self, Poll};

use super::context::Context;
use crate::reclaim::ScopeFlags;

/// Runs futures in a scope: `fut.nofs()`, `fut.noio()`,
/// `fut.with_context(ctx)`. Implemented for every future.
///
/// ```
/// use std::future::Future;
/// use std::pin::pin;
/// use std::sync::Arc;
/// use std::task::{Context as Cx, Poll, Wake, Waker};
/// use shrinkalloc::reclaim::{current_scope, ScopeExt, ScopeFlags};
///
/// struct Noop;
/// impl Wake for Noop {
///     fn wake(self: Arc<Self>) {}
/// }
/// let waker = Waker::from(Arc::new(Noop));
/// let mut fut = pin!(async { current_scope() }.nofs());
/// assert_eq!(fut.as_mut().poll(&mut Cx::from_waker(&waker)), Poll::Ready(ScopeFlags::NOFS));
/// assert_eq!(current_scope(), ScopeFlags::NONE); // the thread is left as it was
/// ```
pub trait ScopeExt: Future + Sized {
    /// Polls (and drops) `self` in a `NOFS` scope, on whatever thread.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Context, ScopeExt, ScopeFlags};
    /// assert_eq!(async {}.nofs().context(), Context::from_scope(ScopeFlags::NOFS));
    /// ```
    fn nofs(self) -> Scoped<Self> {
        self.with_context(Context::from_scope(ScopeFlags::NOFS))
    }

    /// Polls (and drops) `self` in a `NOIO` scope (which implies `NOFS`).
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Context, ScopeExt, ScopeFlags};
    /// assert_eq!(async {}.noio().context(), Context::from_scope(ScopeFlags::NOIO));
    /// ```
    fn noio(self) -> Scoped<Self> {
        self.with_context(Context::from_scope(ScopeFlags::NOIO))
    }

    /// Polls (and drops) `self` with `ctx` adopted: typically the context
    /// captured where the task was spawned ([`Context::capture`]).
    ///
    /// ```
    /// use shrinkalloc::reclaim::{with_noio, Context, ScopeExt};
    /// let ctx = with_noio(Context::capture);
    /// assert_eq!(async {}.with_context(ctx).context(), ctx);
    /// ```
    fn with_context(self, ctx: Context) -> Scoped<Self> {
        Scoped { inner: ManuallyDrop::new(self), ctx }
    }
}

impl<F: Future> ScopeExt for F {}

/// A future polled in a context: see [`ScopeExt`].
///
/// ```
/// use shrinkalloc::reclaim::{ScopeExt, Scoped};
/// let s: Scoped<_> = async { 1 }.nofs();
/// # drop(s);
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Scoped<F> {
    /// Pinned whenever `Scoped` is; dropped in place, in the context.
    inner: ManuallyDrop<F>,
    ctx: Context,
}

impl<F> Scoped<F> {
    /// The context the future is polled in.
    ///
    /// ```
    /// use shrinkalloc::reclaim::{Context, ScopeExt, ScopeFlags};
    /// assert_eq!(async {}.noio().context().scope(), ScopeFlags::NOIO);
    /// ```
    pub fn context(&self) -> Context {
        self.ctx
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is never moved out of
        // `self` (no method hands it out by value, `Drop` drops it in
        // place), so a pinned `Scoped` pins it.
        let this = unsafe { self.get_unchecked_mut() };
        let _scope = this.ctx.adopt();
        // SAFETY: as above: `inner` stays where it is until dropped.
        unsafe { Pin::new_unchecked(&mut *this.inner) }.poll(cx)
    }
}

impl<F> Drop for Scoped<F> {
    fn drop(&mut self) {
        let _scope = self.ctx.adopt();
        // SAFETY: dropped once, here, in place (the pinning guarantee), and
        // never used again.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
    }
}
