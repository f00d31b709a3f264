//! Every region of one process at once: copied to a forked child, dropped at exec and
//! exit. Walks `CHUNKS` and `MARKERS` whole (bpf_for_each_map_elem), keeping the process's
//! entries.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_for_each_map_elem;
use tamalloc_common::{
    maps::{CHUNK_WORDS, Chunk, ChunkKey, DROP_MAP_FULL, MarkerKey, RegionRef},
    trace::PAGE_SIZE,
};

use super::{chunk_key, marker_key};
use crate::maps::{CHUNK_BUF, CHUNKS, MARKERS, SCRATCH_CHUNK, claim_slot, count_drop};

/// What `bpf_for_each_map_elem` hands its callbacks.
type Ptr = *mut c_void;

/// A `bpf_for_each_map_elem` callback: (map, key, value, context) -> 0 to go on.
type EachEntry = extern "C" fn(Ptr, Ptr, Ptr, Ptr) -> i64;

/// A callback's entry of a `K -> V` map, and our context.
///
/// # Safety
/// `key`, `value` and `ctx` are what `bpf_for_each_map_elem` passed a callback walking a
/// `K -> V` map with a [`ProcCtx`] (see [`ProcCtx::each_entry`]).
#[inline(always)]
unsafe fn entry<'a, K, V>(key: Ptr, value: Ptr, ctx: Ptr) -> (&'a K, &'a V, &'a mut ProcCtx) {
    // SAFETY: as the caller promises; the entry and the context outlive the callback.
    unsafe {
        (
            &*(key as *const K),
            &*(value as *const V),
            &mut *(ctx as *mut ProcCtx),
        )
    }
}

#[repr(C)]
struct ProcCtx {
    from: u32,
    to: u32,
    /// The child's counter slot (fork).
    to_slot: u32,
    _pad: u32,
    /// Out: region bytes copied.
    bytes: u64,
}

impl ProcCtx {
    /// Runs `chunk` on every `CHUNKS` entry, then `marker` on every `MARKERS` entry, with
    /// this context (the one walk `fork` and `forget` share).
    #[inline(always)]
    fn each_entry(&mut self, chunk: EachEntry, marker: EachEntry) {
        let ctx = self as *mut ProcCtx as Ptr;
        // SAFETY: the callbacks match bpf_for_each_map_elem's ABI, take their context as
        // this `ProcCtx`, and it outlives the calls.
        unsafe {
            bpf_for_each_map_elem(&CHUNKS as *const _ as Ptr, chunk as Ptr, ctx, 0);
            bpf_for_each_map_elem(&MARKERS as *const _ as Ptr, marker as Ptr, ctx, 0);
        }
    }
}

extern "C" fn fork_chunk(_map: Ptr, key: Ptr, value: Ptr, ctx: Ptr) -> i64 {
    // SAFETY: `fork` walks CHUNKS with its `ProcCtx`.
    let (key, value, ctx) = unsafe { entry::<ChunkKey, Chunk>(key, value, ctx) };
    if key.tgid() == ctx.from {
        // Whether the child's entries for zero-page pages were copied depends on the VMA
        // having an anon_vma; without the bit, either kind of fault there classifies right.
        let Some(copy) = CHUNK_BUF.get_ptr_mut(SCRATCH_CHUNK) else {
            return 1;
        };
        // SAFETY: this CPU's scratch slot; nothing else uses it during this program.
        // Word by word: a whole-`Chunk` assignment goes through the 512-byte BPF stack.
        let copy = unsafe {
            for w in 0..CHUNK_WORDS {
                (*copy).in_region[w] = value.in_region[w];
                (*copy).zero[w] = 0;
                // MADV_WIPEONFORK: the child's copy of those pages is empty.
                (*copy).present[w] = value.present[w] & !value.wipe[w];
                (*copy).start[w] = value.start[w];
                (*copy).noread[w] = value.noread[w];
                (*copy).nowrite[w] = value.nowrite[w];
                (*copy).wipe[w] = value.wipe[w];
                // The parent's munmap in flight is the parent's.
                (*copy).dying[w] = 0;
            }
            (*copy).carry = value.carry;
            (*copy).flags = value.flags;
            (*copy).slot = ctx.to_slot;
            &*copy
        };
        if CHUNKS
            .insert(chunk_key(ctx.to, key.chunk()), copy, 0)
            .is_err()
        {
            count_drop(DROP_MAP_FULL);
        }
        let mut pages = 0u64;
        for w in 0..CHUNK_WORDS {
            pages += u64::from(value.in_region[w].count_ones());
        }
        ctx.bytes += pages * PAGE_SIZE;
    }
    0
}

extern "C" fn fork_marker(_map: Ptr, key: Ptr, value: Ptr, ctx: Ptr) -> i64 {
    // SAFETY: `fork` walks MARKERS with its `ProcCtx`.
    let (key, value, ctx) = unsafe { entry::<MarkerKey, RegionRef>(key, value, ctx) };
    if key.tgid == ctx.from
        && MARKERS
            .insert(marker_key(ctx.to, key.page_addr), value, 0)
            .is_err()
    {
        count_drop(DROP_MAP_FULL);
    }
    0
}

/// Gives child `to` a copy of `from`'s regions and page states. Returns the bytes copied.
pub fn fork(from: u32, to: u32) -> u64 {
    let Some(to_slot) = claim_slot(to) else {
        return 0;
    };
    let mut ctx = ProcCtx {
        from,
        to,
        to_slot,
        _pad: 0,
        bytes: 0,
    };
    ctx.each_entry(fork_chunk, fork_marker);
    ctx.bytes
}

extern "C" fn forget_chunk(_map: Ptr, key: Ptr, value: Ptr, ctx: Ptr) -> i64 {
    // SAFETY: `forget` walks CHUNKS with its `ProcCtx`.
    let (key, _, ctx) = unsafe { entry::<ChunkKey, Chunk>(key, value, ctx) };
    if key.tgid() == ctx.from {
        let _ = CHUNKS.remove(key);
    }
    0
}

extern "C" fn forget_marker(_map: Ptr, key: Ptr, value: Ptr, ctx: Ptr) -> i64 {
    // SAFETY: `forget` walks MARKERS with its `ProcCtx`.
    let (key, _, ctx) = unsafe { entry::<MarkerKey, RegionRef>(key, value, ctx) };
    if key.tgid == ctx.from {
        let _ = MARKERS.remove(key);
    }
    0
}

/// Drops every region of `tgid` (exec gave it a new address space, or it exited).
pub fn forget(tgid: u32) {
    let mut ctx = ProcCtx {
        from: tgid,
        to: 0,
        to_slot: 0,
        _pad: 0,
        bytes: 0,
    };
    ctx.each_entry(forget_chunk, forget_marker);
}
