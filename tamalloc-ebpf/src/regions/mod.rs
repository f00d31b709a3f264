//! Region bookkeeping in `CHUNKS` and `MARKERS` (see `tamalloc_common::maps`): which
//! pages are region pages and of which region, and what each maps. This module answers for
//! one page; [`range`] changes a range of pages, [`process`] copies a process's to a forked
//! child. Entries are keyed by the process's instance (`INSTANCE[tgid]`), so exit and exec
//! drop them in O(1) (`maps::end_instance`) and a reused pid starts empty.
//!
//! Bitmap words are changed with atomic or/and: faults on other CPUs set zero bits in the
//! same words concurrently.

mod process;
mod range;

use tamalloc_common::{
    maps::{
        CHUNK_PAGES, CHUNK_SHIFT, CHUNK_WORDS, Chunk, ChunkKey, DROP_MAP_FULL,
        DROP_REGION_UNRESOLVED, MarkerKey, RegionRef,
    },
    trace::PAGE_SHIFT,
};

pub use self::{
    process::fork,
    range::{Bits, add, copy_page_states, remove, remove_dying, reset, set_bits},
};
use crate::{
    atomics::fetch_or,
    maps::{CHUNK_BUF, CHUNKS, MARKER_BUF, MARKERS, PROC, ZERO_CHUNK, count_drop, instance_of},
};

/// `bpf_loop` refuses more than 1 << 23 iterations: 16 TiB of address space in chunks.
const MAX_CHUNK_LOOPS: u64 = 1 << 23;

/// Bits of word `w` for pages `[lo, hi)` of a chunk.
#[inline(always)]
fn word_mask(w: u64, lo: u64, hi: u64) -> u64 {
    let first = w * 64;
    let a = lo.saturating_sub(first);
    let b = if hi < first + 64 {
        hi.saturating_sub(first)
    } else {
        64
    };
    if a >= b {
        return 0;
    }
    let upper = if b == 64 { u64::MAX } else { (1u64 << b) - 1 };
    upper & !((1u64 << a) - 1)
}

#[inline(always)]
fn chunk_key(inst: u32, chunk: u64) -> ChunkKey {
    ChunkKey::new(inst, chunk)
}

#[inline(always)]
fn marker_key(inst: u32, page_addr: u64) -> MarkerKey {
    MarkerKey {
        inst,
        _pad: 0,
        page_addr,
    }
}

/// Chunk `chunk` of instance `inst` (0: a process without one).
#[inline(always)]
fn chunk_in(inst: u32, chunk: u64) -> Option<*mut Chunk> {
    if inst == 0 {
        return None;
    }
    CHUNKS.get_ptr_mut(chunk_key(inst, chunk))
}

/// Chunk `chunk` of instance `inst` (whose process has counter slot `slot`), created empty
/// when missing. Callers claimed the instance first (`maps::claim`), so that a fault that
/// finds the chunk counts; claiming here would put its frame on every range walk's stack.
#[inline(always)]
fn chunk_or_new(inst: u32, slot: u32, chunk: u64) -> Option<*mut Chunk> {
    let key = chunk_key(inst, chunk);
    if let Some(p) = CHUNKS.get_ptr_mut(key) {
        return Some(p);
    }
    // BPF_NOEXIST: a concurrent creator wins and we use its entry.
    let zero = CHUNK_BUF.get_ptr(ZERO_CHUNK)?;
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value, the chunk would be copied onto the 512-byte BPF stack"
    )]
    // SAFETY: a live map value, only read.
    let _ = CHUNKS.insert(key, unsafe { &*zero }, 1);
    let Some(p) = CHUNKS.get_ptr_mut(key) else {
        count_drop(DROP_MAP_FULL);
        return None;
    };
    // SAFETY: a live map value; every writer stores the same slot.
    unsafe { (*p).slot = slot };
    Some(p)
}

/// The marker at `page_addr` of instance `inst` (its process's counter slot `slot`): its
/// own, else its origin's if the origin set it before the fork (see `maps::Proc`).
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "one key for both lookups: a key by value takes a stack slot per call"
)]
fn marker_at(inst: u32, slot: u32, page_addr: u64) -> Option<RegionRef> {
    // One key for both lookups, by reference: every stack byte here counts in the range
    // walks' frames, and a key passed by value is copied to a new slot per call.
    let mut key = marker_key(inst, page_addr);
    // SAFETY: plain-data map value read for this program run.
    if let Some(m) = unsafe { MARKERS.get(&key) } {
        return Some(m.region);
    }
    let p = PROC.get(slot)?;
    if p.inst != inst || p.origin == 0 {
        return None;
    }
    key.inst = p.origin;
    // SAFETY: as above.
    match unsafe { MARKERS.get(&key) } {
        Some(m) if m.set_epoch <= p.origin_epoch => Some(m.region),
        // The origin replaced it after the fork (or had no room for it).
        _ => {
            count_drop(DROP_REGION_UNRESOLVED);
            None
        }
    }
}

/// The region and page index of `page` (0..512) in chunk `chunk` of instance `inst`, whose
/// entry is `ch`. Callers have checked that the page is in a region.
#[inline(always)]
pub fn resolve(ch: &Chunk, inst: u32, chunk: u64, page: u64) -> RegionRef {
    let top = page >> 6;
    let top_mask = if page & 63 == 63 {
        u64::MAX
    } else {
        (1u64 << ((page & 63) + 1)) - 1
    };
    // Highest start marker at or below `page`; words are scanned with constant indices,
    // which the verifier bounds without help.
    for w in (0..CHUNK_WORDS).rev() {
        let w64 = w as u64;
        if w64 > top {
            continue;
        }
        let bits = ch.start[w] & if w64 == top { top_mask } else { u64::MAX };
        if bits != 0 {
            let start_page = w64 * 64 + 63 - u64::from(bits.leading_zeros());
            let addr = (chunk << CHUNK_SHIFT) + (start_page << PAGE_SHIFT);
            return match marker_at(inst, ch.slot, addr) {
                Some(r) => RegionRef {
                    id: r.id,
                    index: r.index + (page - start_page),
                },
                None => RegionRef::default(),
            };
        }
    }
    RegionRef {
        id: ch.carry.id,
        index: ch.carry.index + page,
    }
}

/// A followed page: its chunk's entry, and its index in the chunk (0..512).
pub struct Followed {
    pub chunk: *mut Chunk,
    pub page: u64,
}

impl Followed {
    /// The page's bit in the chunk's bitmaps: (word, bit).
    #[inline(always)]
    pub fn word_bit(&self) -> (usize, u64) {
        (((self.page >> 6) & 7) as usize, 1u64 << (self.page & 63))
    }
}

/// The membership predicate: whether the page at `addr` of instance `inst` (a process's
/// address space, `INSTANCE[tgid]`) is one the tracer follows, and where its state is.
/// Every fault path of both modes asks this one function, so widening what is followed is
/// one change.
#[inline(always)]
pub fn followed(inst: u32, addr: u64) -> Option<Followed> {
    let chunk = CHUNKS.get_ptr_mut(chunk_key(inst, addr >> CHUNK_SHIFT))?;
    let page = (addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1);
    // SAFETY: `chunk` is a live map value for this program run.
    let in_region = unsafe { (*chunk).in_region[((page >> 6) & 7) as usize] };
    if in_region & (1 << (page & 63)) == 0 {
        return None;
    }
    Some(Followed { chunk, page })
}

/// Looks up the region of `addr` in `tgid`, if it is a region page.
#[inline(always)]
pub fn region_at(tgid: u32, addr: u64) -> Option<RegionRef> {
    let inst = instance_of(tgid);
    if inst == 0 {
        return None;
    }
    let chunk = addr >> CHUNK_SHIFT;
    // SAFETY: plain-data map value read for this program run.
    let ch = unsafe { CHUNKS.get(chunk_key(inst, chunk)) }?;
    let page = (addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1);
    if ch.in_region[((page >> 6) & 7) as usize] & (1 << (page & 63)) == 0 {
        return None;
    }
    Some(resolve(ch, inst, chunk, page))
}

/// Whether `addr` is a region page of `tgid`.
#[inline(always)]
pub fn is_region_page(tgid: u32, addr: u64) -> bool {
    let inst = instance_of(tgid);
    if inst == 0 {
        return false;
    }
    // SAFETY: plain-data map value read for this program run.
    match unsafe { CHUNKS.get(chunk_key(inst, addr >> CHUNK_SHIFT)) } {
        Some(ch) => {
            let page = (addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1);
            ch.in_region[((page >> 6) & 7) as usize] & (1 << (page & 63)) != 0
        }
        None => false,
    }
}

/// Gives `page_addr` of `tgid` a start marker naming `r`, stamped with the process's fork
/// epoch (children forked before now keep seeing what they inherited, see [`marker_at`]).
/// A marker that already names `r` keeps its stamp: every child forked since inherited
/// exactly that (a munmap re-marks the region after the range with its own identity).
#[inline(always)]
fn set_marker(tgid: u32, page_addr: u64, r: &RegionRef) -> bool {
    let inst = instance_of(tgid);
    let Some(ch) = chunk_in(inst, page_addr >> CHUNK_SHIFT) else {
        return false;
    };
    let key = marker_key(inst, page_addr);
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "one key on the stack for both calls"
    )]
    // SAFETY: plain-data map value read for this program run.
    let unchanged = unsafe { MARKERS.get(&key) }.is_some_and(|m| m.region == *r);
    if !unchanged {
        // SAFETY: a live map value; `slot` is written once, when the chunk is made.
        let Some(p) = PROC.get(unsafe { (*ch).slot }) else {
            return false;
        };
        // Built in a per-CPU buffer, not on the stack: this runs in the frames the range
        // walks share with their callbacks (6.1 adds them against one 512-byte stack).
        let Some(m) = MARKER_BUF.get_ptr_mut(0) else {
            return false;
        };
        // SAFETY: this CPU's scratch value; tracepoint programs do not nest on a CPU.
        let m = unsafe {
            (*m).region = *r;
            (*m).set_epoch = p.epoch;
            &*m
        };
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "by value, the marker would be copied onto the BPF stack"
        )]
        if MARKERS.insert(&key, m, 0).is_err() {
            count_drop(DROP_MAP_FULL);
            return false;
        }
    }
    let page = (page_addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1);
    // SAFETY: `ch` is a live map value; the field pointer is in bounds.
    let word = unsafe { &raw mut (*ch).start[((page >> 6) & 7) as usize] };
    fetch_or(word, 1 << (page & 63));
    true
}
