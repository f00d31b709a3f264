//! Atomic read-modify-write on map values. The BPF target has no compare-and-swap, so
//! `core::sync::atomic` hides `fetch_or`/`fetch_and`; the intrinsics lower to BPF_ATOMIC
//! (x86's locked instructions). Sequentially consistent: a load after one is not moved
//! before it.

use core::intrinsics::{AtomicOrdering, atomic_and, atomic_or, atomic_xadd, atomic_xsub};

/// `*word |= bits`, returning the old value.
#[inline(always)]
pub fn fetch_or(word: *mut u64, bits: u64) -> u64 {
    // SAFETY: callers pass a pointer into a live, 8-byte aligned map value.
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(word, bits) }
}

/// `*word &= bits`, returning the old value.
#[inline(always)]
pub fn fetch_and(word: *mut u64, bits: u64) -> u64 {
    // SAFETY: callers pass a pointer into a live, 8-byte aligned map value.
    unsafe { atomic_and::<u64, u64, { AtomicOrdering::SeqCst }>(word, bits) }
}

/// `*word += n`. No old value: the BPF target's 64-bit fetch-add needs cpu v3 (the plain
/// add is the original `BPF_XADD`, which every kernel takes).
#[inline(always)]
pub fn atomic_add(word: *mut u64, n: u64) {
    // SAFETY: callers pass a pointer into a live, 8-byte aligned map value.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(word, n) };
}

/// `*word -= n` (see [`atomic_add`]).
#[inline(always)]
pub fn atomic_sub(word: *mut u64, n: u64) {
    // SAFETY: callers pass a pointer into a live, 8-byte aligned map value.
    unsafe { atomic_xsub::<u64, u64, { AtomicOrdering::SeqCst }>(word, n) };
}
