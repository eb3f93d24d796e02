//! The C library's `free` of a small block pushes it where the next
//! `malloc` of its class looks first: the block freed last, still in the
//! cache, is the next one handed out (as in jemalloc's and tcmalloc's
//! thread caches). Since freed blocks then share the allocation list with
//! freshly carved ones, `calloc` of a small block never trusts the page to
//! be zeroed: it returns zeros after a dirty block was freed.

use shrinkalloc::raw;

#[test]
fn the_block_freed_last_is_the_next_one_handed_out() {
    for size in [16, 48, 200, 1000, 4000] {
        let a = raw::malloc(size);
        let b = raw::malloc(size);
        assert!(!a.is_null() && !b.is_null());
        // SAFETY: `a` is live and not used again.
        unsafe { raw::free(a) };
        let c = raw::malloc(size);
        assert_eq!(c, a, "{size} B: the block just freed was not handed out next");
        // SAFETY: both are live, freed once.
        unsafe {
            raw::free(b);
            raw::free(c);
        }
    }
}

#[test]
fn calloc_after_a_dirty_free_returns_zeros() {
    for size in [16, 100, 1024, 8192] {
        let p = raw::malloc(size);
        assert!(!p.is_null());
        // SAFETY: `p` holds `size` bytes; then it is freed once.
        unsafe {
            p.write_bytes(0xa5, size);
            raw::free(p);
        }
        let q = raw::malloc_zeroed(size, 8);
        assert!(!q.is_null());
        // SAFETY: `q` holds `size` bytes.
        let bytes = unsafe { core::slice::from_raw_parts(q, size) };
        assert!(bytes.iter().all(|&x| x == 0), "{size} B: calloc returned dirty bytes");
        // SAFETY: live, freed once.
        unsafe { raw::free(q) };
    }
}
