//! A counting global allocator: per thread, the bytes allocated minus the bytes freed, for the mapping budget.
//!
//! The binaries (and the test and bench crates) install [`Counting`] around their allocator. It only
//! adds to a thread-local counter: it never panics, never fails an allocation of its own accord and
//! never allocates. The jq engine reads the counter at its checks ([`crate::mapping::budget`]) and
//! stops a run that holds more than its budget; the allocator itself decides nothing.
//!
//! Where no [`Counting`] allocator is installed (a program that only links the library), the counter
//! stays at zero and [`installed`] is false: byte budgets are then not enforced.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The allocator `A` with a per-thread count of the bytes it holds for that thread.
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: portal_bridge::alloc::Counting<mimalloc::MiMalloc> = portal_bridge::alloc::Counting(mimalloc::MiMalloc);
/// fn main() {}
/// ```
pub struct Counting<A>(pub A);

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (memory freed here that another thread
    /// allocated counts too, so the value may be negative). A `const` cell without destructor: reading
    /// and writing it never allocates, so the allocator may use it.
    static NET: Cell<isize> = const { Cell::new(0) };
}

/// Set at the first allocation through a [`Counting`] allocator.
static INSTALLED: AtomicBool = AtomicBool::new(false);

#[inline]
fn add(bytes: isize) {
    // `try_with`: never fails for a const cell without destructor, but must not panic in any case.
    let _ = NET.try_with(|net| net.set(net.get().wrapping_add(bytes)));
}

#[inline]
fn mark_installed() {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to `A` unchanged; the counting touches no memory of the allocation.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let ptr = unsafe { self.0.alloc(layout) };
        if !ptr.is_null() {
            mark_installed();
            add(layout.size() as isize);
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let ptr = unsafe { self.0.alloc_zeroed(layout) };
        if !ptr.is_null() {
            mark_installed();
            add(layout.size() as isize);
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { self.0.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let new = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// Bytes this thread has allocated minus the bytes it has freed, through the [`Counting`]
/// allocator (0 if none is installed). Only differences between two readings mean something.
#[inline]
pub fn thread_net_bytes() -> isize {
    NET.try_with(Cell::get).unwrap_or(0)
}

/// Whether a [`Counting`] allocator is installed (it has served an allocation).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Runs `f` and returns its result with the bytes it left allocated on this thread (allocated
/// minus freed while it ran; 0 without a [`Counting`] allocator).
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, isize) {
    let before = thread_net_bytes();
    let out = f();
    (out, thread_net_bytes() - before)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library's unit tests run without a global [`Counting`] allocator; this one counts into
    /// the same thread-local counter when called directly.
    static COUNTING: Counting<std::alloc::System> = Counting(std::alloc::System);

    #[test]
    fn counts_allocations_minus_frees_on_this_thread() {
        let layout = Layout::from_size_align(1000, 8).unwrap();
        let before = thread_net_bytes();
        // SAFETY: a valid layout; the block is freed with the same layout.
        let ptr = unsafe { COUNTING.alloc(layout) };
        assert!(!ptr.is_null());
        assert_eq!(thread_net_bytes() - before, 1000);
        // SAFETY: `ptr` came from this allocator with `layout`.
        let ptr = unsafe { COUNTING.realloc(ptr, layout, 3000) };
        assert_eq!(thread_net_bytes() - before, 3000);
        // Another thread's count is its own.
        let elsewhere = std::thread::spawn(thread_net_bytes).join().unwrap();
        assert_eq!(elsewhere, 0);
        // SAFETY: `ptr` came from this allocator, now with 3000 bytes.
        unsafe { COUNTING.dealloc(ptr, Layout::from_size_align(3000, 8).unwrap()) };
        assert_eq!(thread_net_bytes(), before);
        assert!(installed());
    }
}
