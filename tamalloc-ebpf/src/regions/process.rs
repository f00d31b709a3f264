//! A forked child's copy of its parent's regions. Page states diverge from the fork on, so
//! the child gets its own copy of every chunk (one walk of `CHUNKS`, keeping the parent's
//! entries); region identities do not, so it links to the parent's markers instead of
//! copying them (`maps::Proc::origin`): a fork costs O(chunks), not O(regions), and a
//! pre-fork server's children share its markers. Exit and exec need no walk at all
//! (`maps::end_instance`).

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_for_each_map_elem;
use tamalloc_common::{
    maps::{CHUNK_WORDS, Chunk, ChunkKey, DROP_MAP_FULL, Marker, MarkerKey},
    trace::PAGE_SIZE,
};

use super::{chunk_key, marker_key};
use crate::{
    atomics::atomic_add,
    maps::{
        CHUNK_BUF, CHUNKS, MARKERS, PROC, SCRATCH_CHUNK, claim, count_drop, instance_of,
        link_origin, slot_of, unlink_origin,
    },
};

/// What `bpf_for_each_map_elem` hands its callbacks.
type Ptr = *mut c_void;

/// A callback's entry of a `K -> V` map, and our context.
///
/// # Safety
/// `key`, `value` and `ctx` are what `bpf_for_each_map_elem` passed a callback walking a
/// `K -> V` map with a [`ForkCtx`].
#[inline(always)]
unsafe fn entry<'a, K, V>(key: Ptr, value: Ptr, ctx: Ptr) -> (&'a K, &'a V, &'a mut ForkCtx) {
    // SAFETY: as the caller promises; the entry and the context outlive the callback.
    unsafe {
        (
            &*(key as *const K),
            &*(value as *const V),
            &mut *(ctx as *mut ForkCtx),
        )
    }
}

#[repr(C)]
struct ForkCtx {
    /// The parent's and the child's instances.
    from: u32,
    to: u32,
    /// The child's counter slot.
    to_slot: u32,
    _pad: u32,
    /// Out: region bytes copied.
    bytes: u64,
}

extern "C" fn fork_chunk(_map: Ptr, key: Ptr, value: Ptr, ctx: Ptr) -> i64 {
    // SAFETY: `fork` walks CHUNKS with its `ForkCtx`.
    let (key, value, ctx) = unsafe { entry::<ChunkKey, Chunk>(key, value, ctx) };
    if key.inst() == ctx.from {
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
    // SAFETY: `fork` walks MARKERS with its `ForkCtx`.
    let (key, value, ctx) = unsafe { entry::<MarkerKey, Marker>(key, value, ctx) };
    if key.inst == ctx.from
        && MARKERS
            .insert(marker_key(ctx.to, key.page_addr), value, 0)
            .is_err()
    {
        count_drop(DROP_MAP_FULL);
    }
    0
}

/// Gives child `to` a copy of `from`'s regions and page states. Returns the bytes copied.
///
/// The child's markers: those of the parent's origin when the parent has one (the child
/// links there too, and gets a copy of the few markers the parent set itself: chains of
/// origins stay one link long), else the parent's own, as of now (its fork epoch moves on,
/// so a marker it sets from now on is not the child's).
pub fn fork(from: u32, to: u32) -> u64 {
    let from_inst = instance_of(from);
    if from_inst == 0 {
        return 0;
    }
    let Some(from_slot) = slot_of(from) else {
        return 0;
    };
    let Some((to_slot, to_inst)) = claim(to) else {
        return 0;
    };
    let (Some(parent), Some(child)) = (PROC.get_ptr_mut(from_slot), PROC.get_ptr_mut(to_slot))
    else {
        return 0;
    };
    // SAFETY: live map values. The parent's epoch moves with an atomic add (its threads may
    // fork at once: then both children take the epoch before both adds, which only widens
    // the window the chunk copy has anyway); its origin is written only at its own exec and
    // exit, neither of which runs now. The child has not run yet: its value is ours.
    let copy_markers = unsafe {
        let (origin, epoch, copy) = if (*parent).origin == 0 {
            let epoch = core::ptr::read_volatile(&raw const (*parent).epoch);
            atomic_add(&raw mut (*parent).epoch, 1);
            (from_inst, epoch, false)
        } else {
            ((*parent).origin, (*parent).origin_epoch, true)
        };
        if (*child).origin != 0 {
            unlink_origin((*child).origin);
            (*child).origin = 0;
        }
        if link_origin(origin) {
            (*child).origin = origin;
            (*child).origin_epoch = epoch;
            copy
        } else {
            // No room to link: the child gets a copy of the parent's own markers instead
            // (all of them when the parent has no origin; counted as `map_full` anyway).
            true
        }
    };
    let mut ctx = ForkCtx {
        from: from_inst,
        to: to_inst,
        to_slot,
        _pad: 0,
        bytes: 0,
    };
    let ptr = &mut ctx as *mut ForkCtx as Ptr;
    // SAFETY: the callbacks match bpf_for_each_map_elem's ABI, take their context as this
    // `ForkCtx`, and it outlives the calls.
    unsafe {
        bpf_for_each_map_elem(&CHUNKS as *const _ as Ptr, fork_chunk as Ptr, ptr, 0);
        if copy_markers {
            bpf_for_each_map_elem(&MARKERS as *const _ as Ptr, fork_marker as Ptr, ptr, 0);
        }
    }
    ctx.bytes
}
