//! The broker's global allocator: the system allocator, except that blocks of 1 GiB and more
//! are anonymous `MAP_NORESERVE` mappings, which cost nothing until touched.
//!
//! Why: Kafka's schemas carry element counts, and the `kafka-protocol` crate's array decoder
//! reserves `count` elements before reading any (upstream pull requests #161 and #200 fix it,
//! not yet released). A ten-byte Metadata request announcing 2^31 topics asks for 154 GB; the
//! system allocator refuses, and a refused allocation aborts the process. With this allocator
//! the reservation succeeds without memory behind it, the decoder then runs out of bytes, and
//! the connection is closed with a log line. No legitimate allocation of the broker comes near
//! 1 GiB (requests are at most 100 MiB), so only such bogus reservations take this path.
//!
//! Invariant: a block is unmapped exactly when it was mapped, decided by the same layout test
//! in `alloc` and `dealloc` (Rust passes `dealloc` the layout the block was allocated with).

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::null_mut;

use rustix::mm::{MapFlags, ProtFlags};

/// Blocks at least this large are mapped lazily.
const LAZY_FROM: usize = 1 << 30;
/// The page size mappings are aligned to (every Linux target we build for has 4 KiB pages or
/// larger, so a mapping is aligned to at least this).
const PAGE: usize = 4096;

/// See the module documentation.
#[derive(Debug)]
pub struct Allocator;

fn lazy(layout: Layout) -> bool {
    layout.size() >= LAZY_FROM && layout.align() <= PAGE
}

// SAFETY: every method either delegates to `System` with the caller's arguments (upholding
// `GlobalAlloc`'s contract as `System` does) or, for `lazy` layouts, returns a fresh private
// anonymous mapping of `layout.size()` bytes: readable, writable, zero-filled, page-aligned
// (so aligned to `layout.align()`, which `lazy` bounds by `PAGE`), and owned by nobody else
// until `dealloc` unmaps exactly that range. A failed mapping returns null, as the contract
// asks.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if lazy(layout) {
            // SAFETY: a null address lets the kernel choose; no existing memory is affected.
            match unsafe {
                rustix::mm::mmap_anonymous(
                    null_mut(),
                    layout.size(),
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::PRIVATE | MapFlags::NORESERVE,
                )
            } {
                Ok(block) => block.cast(),
                Err(_) => null_mut(),
            }
        } else {
            // SAFETY: the caller upholds `alloc`'s contract (non-zero size).
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if lazy(layout) {
            // SAFETY: as `alloc`; anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: the caller upholds the contract.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if lazy(layout) {
            // SAFETY: `ptr` came from `alloc` with this layout, so it is the start of a mapping
            // of `layout.size()` bytes that nothing uses any more.
            let _ = unsafe { rustix::mm::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` rounded to `layout.align()` fits `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !lazy(layout) && !lazy(new_layout) {
            // SAFETY: `ptr` came from `System` with `layout`; the caller upholds the rest.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: as `alloc` / `dealloc`; the copy covers the smaller of two live blocks that
        // do not overlap (the new one is fresh).
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bogus_reservation_costs_nothing() {
        // 154 GB, as a ten-byte Metadata request announcing 2^31 topics would ask.
        let v: Vec<[u8; 72]> = Vec::with_capacity(i32::MAX as usize);
        assert!(v.capacity() >= i32::MAX as usize);
        let mut small = Vec::with_capacity(16);
        small.extend_from_slice(&[1u8; 16]);
        small.extend_from_slice(&[2u8; 4096]);
        assert_eq!(small.len(), 4112);
    }
}
