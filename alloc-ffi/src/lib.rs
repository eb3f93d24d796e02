//! The C ABI of shrinkalloc: `libshrinkalloc.so` / `libshrinkalloc.a`.
//!
//! Placeholder until the C ABI lands: the library builds, exports nothing yet.
#![deny(unsafe_op_in_unsafe_fn)]
