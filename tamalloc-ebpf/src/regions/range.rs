//! Ranges of one process's pages: made region pages, forgotten, reset (their pages
//! dropped), their page states moved. Walked one 2 MiB chunk per `bpf_loop` iteration, so a
//! range of any size is verified once and costs one map update per chunk.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, macros::map, maps::PerCpuArray};
use tamalloc_common::{
    maps::{
        CHUNK_PAGES, CHUNK_RESTRICTED, CHUNK_SHIFT, CHUNK_WORDS, DROP_MAP_FULL, DROP_REGION_CUT,
        RegionRef, instance_slot,
    },
    trace::{PAGE_SHIFT, PAGE_SIZE},
};

use super::{
    MAX_CHUNK_LOOPS, chunk_in, chunk_key, chunk_or_new, marker_key, region_at, set_marker,
    word_mask,
};
use crate::{
    atomics::{fetch_and, fetch_or},
    maps::{CHUNKS, MARKERS, PROC, claim, count_drop, has_children, instance_of},
};

/// A walk's context: the instance is looked up once, not per chunk. Small: 6.1's verifier
/// adds the frames of nested `bpf_loop` callbacks against one 512-byte stack.
#[repr(C)]
struct RangeCtx {
    /// The process's instance (0: none) and, for `add`, its counter slot.
    inst: u32,
    slot: u32,
    /// First and one-past-last page number (`addr >> PAGE_SHIFT`).
    first_page: u64,
    end_page: u64,
    id: u64,
    /// Page index in the region of `first_page`.
    index: u64,
    /// Out: bytes of region pages added or removed.
    bytes: u64,
}

impl RangeCtx {
    /// Pages `[addr, end)` of `tgid`'s instance, region `id` with `addr` its page `index`.
    #[inline(always)]
    fn new(tgid: u32, addr: u64, end: u64, id: u64, index: u64) -> Self {
        Self {
            inst: instance_of(tgid),
            slot: 0,
            first_page: addr >> PAGE_SHIFT,
            end_page: end >> PAGE_SHIFT,
            id,
            index,
            bytes: 0,
        }
    }

    /// Runs `each_chunk` on every chunk of the range, one `bpf_loop` iteration each (the
    /// one walk `add`, `remove` and `reset` share). False when there was nothing to walk,
    /// or too much (counted as a map-full drop).
    #[inline(always)]
    fn walk(&mut self, each_chunk: extern "C" fn(u64, *mut c_void) -> i64) -> bool {
        let n = self.chunks();
        if n == 0 {
            return false;
        }
        if n > MAX_CHUNK_LOOPS {
            count_drop(DROP_MAP_FULL);
            return false;
        }
        // SAFETY: `each_chunk` matches bpf_loop's callback ABI and takes its context as
        // this `RangeCtx`, which outlives the call.
        unsafe {
            bpf_loop(
                n as u32,
                each_chunk as *mut c_void,
                self as *mut RangeCtx as *mut c_void,
                0,
            )
        };
        true
    }

    #[inline(always)]
    fn chunk_span(&self, i: u64) -> (u64, u64, u64) {
        let chunk = (self.first_page >> 9) + i;
        let base = chunk << 9;
        let lo = self.first_page.saturating_sub(base);
        let hi = if self.end_page < base + CHUNK_PAGES {
            self.end_page - base
        } else {
            CHUNK_PAGES
        };
        (chunk, lo, hi)
    }

    #[inline(always)]
    fn chunks(&self) -> u64 {
        if self.end_page <= self.first_page {
            return 0;
        }
        ((self.end_page - 1) >> 9) - (self.first_page >> 9) + 1
    }
}

extern "C" fn add_chunk(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `RangeCtx` on our stack that `add` gave it.
    let ctx = unsafe { &mut *(ctx as *mut RangeCtx) };
    let (chunk, lo, hi) = ctx.chunk_span(i);
    let Some(ch) = chunk_or_new(ctx.inst, ctx.slot, chunk) else {
        // The rest of the region is not followed (and not in the bytes reported).
        count_drop(DROP_REGION_CUT);
        return 1;
    };
    let mut added = 0u64;
    // Branch-free per word (a zero mask changes nothing), so the verifier walks one path.
    for i in 0..CHUNK_WORDS {
        let m = word_mask(i as u64, lo, hi);
        // SAFETY: `ch` is a live map value; the field pointers are in bounds.
        let (inr, zero, present) = unsafe {
            (
                &raw mut (*ch).in_region[i],
                &raw mut (*ch).zero[i],
                &raw mut (*ch).present[i],
            )
        };
        let before = fetch_or(inr, m);
        added += u64::from((m & !before).count_ones());
        fetch_and(zero, !m);
        fetch_and(present, !m);
        // A new region is readable, writable and not wiped on fork. Only this program
        // writes these three (syscalls of one process), so plain stores do.
        // SAFETY: as above.
        unsafe {
            (*ch).noread[i] &= !m;
            (*ch).nowrite[i] &= !m;
            (*ch).wipe[i] &= !m;
            (*ch).dying[i] &= !m;
        }
    }
    ctx.bytes += added * PAGE_SIZE;
    if i > 0 {
        // The region enters this chunk at page 0.
        // SAFETY: as above.
        unsafe {
            (*ch).carry = RegionRef {
                id: ctx.id,
                index: ctx.index + ((chunk << 9) - ctx.first_page),
            }
        };
    }
    0
}

/// Makes `[addr, addr + len)` region pages of region `id`, `addr` being its page `index`.
/// Returns the bytes that were not region pages before.
pub fn add(tgid: u32, addr: u64, len: u64, id: u64, index: u64) -> u64 {
    let mut ctx = RangeCtx::new(tgid, addr, addr + len, id, index);
    if ctx.chunks() == 0 {
        return 0;
    }
    // The slot and instance (the gate) before any chunk: a fault that finds one counts.
    let Some((slot, inst)) = claim(tgid) else {
        return 0;
    };
    (ctx.inst, ctx.slot) = (inst, slot);
    if !ctx.walk(add_chunk) {
        return 0;
    }
    set_marker(tgid, addr, &RegionRef { id, index });
    ctx.bytes
}

#[repr(C)]
pub struct MarkerSweep {
    inst: u32,
    _pad: u32,
    chunk: u64,
    /// Markers set before this fork epoch stay (a child forked since may need them); 0
    /// when the instance has no children: every marker goes.
    keep_before: u64,
    starts: [u64; CHUNK_WORDS],
}

/// Kept off the stack: 6.1's verifier counts the frames of nested bpf_loop callbacks
/// against the same 512 bytes. Per CPU, and tracepoint programs do not nest on a CPU.
#[map]
static SWEEP: PerCpuArray<MarkerSweep> = PerCpuArray::with_max_entries(1, 0);
named_map!(SWEEP);

extern "C" fn sweep_marker(i: u64, _ctx: *mut c_void) -> i64 {
    // bpf_loop's context must be on the stack, so the sweep is looked up here.
    let Some(ctx) = SWEEP.get(0) else {
        return 1;
    };
    let w = ((i >> 6) & 7) as usize;
    if ctx.starts[w] & (1 << (i & 63)) != 0 {
        let addr = (ctx.chunk << CHUNK_SHIFT) + ((i & (CHUNK_PAGES - 1)) << PAGE_SHIFT);
        let key = marker_key(ctx.inst, addr);
        // The page has no start bit any more, so its own process never reads the marker
        // again; a child forked after it was set may (userspace deletes it with the
        // instance, once no child is left).
        // SAFETY: plain-data map value read for this program run.
        let needed = unsafe { MARKERS.get(key) }.is_some_and(|m| m.set_epoch < ctx.keep_before);
        if !needed {
            let _ = MARKERS.remove(key);
        }
    }
    0
}

extern "C" fn remove_chunk(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `RangeCtx` on our stack that `remove` gave it.
    let ctx = unsafe { &mut *(ctx as *mut RangeCtx) };
    let (chunk, lo, hi) = ctx.chunk_span(i);
    let Some(ch) = chunk_in(ctx.inst, chunk) else {
        return 0;
    };
    let Some(sweep) = SWEEP.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value, used by nothing else while this program runs.
    let sweep = unsafe { &mut *sweep };
    sweep.inst = ctx.inst;
    // Looked up here, not once in `remove`: 6.1 counts `remove`'s frame, this one's and the
    // sweep's together, and this one has room left in its 32-byte rounding.
    sweep.keep_before = match PROC.get(instance_slot(ctx.inst)) {
        Some(p) if has_children(ctx.inst) => p.epoch,
        _ => 0,
    };
    sweep.chunk = chunk;
    let mut removed = 0u64;
    let mut left = 0u64;
    let mut any_start = 0u64;
    // Branch-free per word (a zero mask changes nothing), so the verifier walks one path.
    // All ones when only the dying pages go: a mask, not a branch in the loop, which the
    // verifier would walk both ways per word.
    let only_dying = 0u64.wrapping_sub(ctx.id & ONLY_DYING);
    for w in 0..CHUNK_WORDS {
        // SAFETY: `ch` is a live map value; the field pointer is in bounds.
        let dying = unsafe { &raw mut (*ch).dying[w] };
        // SAFETY: as above; syscalls of one process are the bitmap's only writers.
        let m = unsafe {
            let m = word_mask(w as u64, lo, hi) & (!only_dying | *dying);
            *dying &= !m;
            m
        };
        // SAFETY: `ch` is a live map value; the field pointers are in bounds.
        let (inr, zero, present, start) = unsafe {
            (
                &raw mut (*ch).in_region[w],
                &raw mut (*ch).zero[w],
                &raw mut (*ch).present[w],
                &raw mut (*ch).start[w],
            )
        };
        let before = fetch_and(inr, !m);
        removed += u64::from((before & m).count_ones());
        left |= before & !m;
        fetch_and(zero, !m);
        fetch_and(present, !m);
        let starts = fetch_and(start, !m) & m;
        sweep.starts[w] = starts;
        any_start |= starts;
    }
    if any_start != 0 {
        // SAFETY: `sweep_marker` matches bpf_loop's callback ABI; `sweep` outlives the call.
        unsafe {
            bpf_loop(
                CHUNK_PAGES as u32,
                sweep_marker as *mut c_void,
                &mut 0u64 as *mut u64 as *mut c_void,
                0,
            )
        };
    }
    ctx.bytes += removed * PAGE_SIZE;
    if left == 0 {
        let _ = CHUNKS.remove(chunk_key(ctx.inst, chunk));
    }
    0
}

/// [`RangeCtx::id`] of a removal of the dying pages alone.
const ONLY_DYING: u64 = 1;

/// Forgets `[addr, addr + len)`. The region page right after the range, if any, gets a start
/// marker so that it keeps its identity. Returns the bytes of region pages that went away.
pub fn remove(tgid: u32, addr: u64, len: u64) -> u64 {
    remove_pages(tgid, addr, len, 0)
}

/// [`remove`] for the pages of the range still marked dying (a munmap that succeeded).
pub fn remove_dying(tgid: u32, addr: u64, len: u64) -> u64 {
    remove_pages(tgid, addr, len, ONLY_DYING)
}

#[inline(always)]
fn remove_pages(tgid: u32, addr: u64, len: u64, which: u64) -> u64 {
    let end = addr + len;
    let after = region_at(tgid, end);
    let mut ctx = RangeCtx::new(tgid, addr, end, which, 0);
    if ctx.inst == 0 {
        return 0;
    }
    if !ctx.walk(remove_chunk) {
        return 0;
    }
    if let Some(r) = after {
        set_marker(tgid, end, &r);
    }
    ctx.bytes
}

extern "C" fn reset_chunk(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `RangeCtx` on our stack that `reset` gave it.
    let ctx = unsafe { &*(ctx as *const RangeCtx) };
    let (chunk, lo, hi) = ctx.chunk_span(i);
    let Some(ch) = chunk_in(ctx.inst, chunk) else {
        return 0;
    };
    for w in 0..CHUNK_WORDS {
        let m = word_mask(w as u64, lo, hi);
        // SAFETY: `ch` is a live map value; the field pointers are in bounds.
        let (zero, present) = unsafe { (&raw mut (*ch).zero[w], &raw mut (*ch).present[w]) };
        fetch_and(zero, !m);
        fetch_and(present, !m);
    }
    0
}

/// Forgets what `[addr, addr + len)` maps (MADV_DONTNEED and friends dropped the pages):
/// the next touch of each page is a first touch again. The pages stay region pages.
pub fn reset(tgid: u32, addr: u64, len: u64) {
    RangeCtx::new(tgid, addr, addr + len, 0, 0).walk(reset_chunk);
}

/// Which per-page bitmap [`set_bits`] changes.
#[derive(Clone, Copy)]
#[repr(u64)]
pub enum Bits {
    NoRead = 0,
    NoWrite = 1,
    Wipe = 2,
    Dying = 3,
}

extern "C" fn set_bits_chunk(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `RangeCtx` on our stack that `set_bits` gave it.
    let ctx = unsafe { &*(ctx as *const RangeCtx) };
    let (chunk, lo, hi) = ctx.chunk_span(i);
    let Some(ch) = chunk_in(ctx.inst, chunk) else {
        return 0;
    };
    // `id` says which bitmap, `index` whether to set (1) or clear (0) its bits.
    let (which, on) = (ctx.id, ctx.index != 0);
    let mut any = 0u64;
    for w in 0..CHUNK_WORDS {
        // Only region pages: the bitmaps are read for region pages alone.
        // SAFETY: `ch` is a live map value; the field pointers are in bounds.
        let m = word_mask(w as u64, lo, hi) & unsafe { (*ch).in_region[w] };
        // SAFETY: as above.
        let word = unsafe {
            match which {
                0 => &raw mut (*ch).noread[w],
                1 => &raw mut (*ch).nowrite[w],
                2 => &raw mut (*ch).wipe[w],
                _ => &raw mut (*ch).dying[w],
            }
        };
        // SAFETY: as above; syscalls of one process are this map value's only writers of
        // these bitmaps.
        unsafe { *word = if on { *word | m } else { *word & !m } };
        any |= m;
    }
    if on && any != 0 && which <= Bits::NoWrite as u64 {
        // SAFETY: as above.
        unsafe { (*ch).flags |= CHUNK_RESTRICTED };
    }
    0
}

/// Sets (`on`) or clears bitmap `which` for the region pages in `[addr, addr + len)`.
pub fn set_bits(tgid: u32, addr: u64, len: u64, which: Bits, on: bool) {
    let addr = addr & !(PAGE_SIZE - 1);
    RangeCtx::new(tgid, addr, addr + len, which as u64, u64::from(on)).walk(set_bits_chunk);
}

#[repr(C)]
struct CopyCtx {
    inst: u32,
    _pad: u32,
    src_page: u64,
    dst_page: u64,
}

extern "C" fn copy_page_state(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `CopyCtx` on our stack that `copy_page_states` gave it.
    let ctx = unsafe { &*(ctx as *const CopyCtx) };
    let src = ctx.src_page + i;
    let dst = ctx.dst_page + i;
    // SAFETY: plain-data map value read for this program run.
    let Some(s) = (unsafe { CHUNKS.get(chunk_key(ctx.inst, src >> 9)) }) else {
        return 0;
    };
    let sp = src & (CHUNK_PAGES - 1);
    let (sw, sbit) = (((sp >> 6) & 7) as usize, 1u64 << (sp & 63));
    let (zero, present) = (s.zero[sw] & sbit != 0, s.present[sw] & sbit != 0);
    // The mapping's protection and wipe-on-fork go along with its pages.
    let (noread, nowrite, wipe) = (
        s.noread[sw] & sbit != 0,
        s.nowrite[sw] & sbit != 0,
        s.wipe[sw] & sbit != 0,
    );
    if !zero && !present && !noread && !nowrite && !wipe {
        return 0;
    }
    if let Some(d) = chunk_in(ctx.inst, dst >> 9) {
        let dp = dst & (CHUNK_PAGES - 1);
        let (dw, dbit) = (((dp >> 6) & 7) as usize, 1u64 << (dp & 63));
        // SAFETY: `d` is a live map value; the field pointers are in bounds.
        let (dz, dpr) = unsafe { (&raw mut (*d).zero[dw], &raw mut (*d).present[dw]) };
        fetch_or(dz, if zero { dbit } else { 0 });
        fetch_or(dpr, if present { dbit } else { 0 });
        // SAFETY: as above; syscalls of one process are these bitmaps' only writers.
        unsafe {
            if noread {
                (*d).noread[dw] |= dbit;
            }
            if nowrite {
                (*d).nowrite[dw] |= dbit;
            }
            if wipe {
                (*d).wipe[dw] |= dbit;
            }
            if noread || nowrite {
                (*d).flags |= CHUNK_RESTRICTED;
            }
        }
    }
    0
}

/// Copies what each page maps from `src` to `dst` (an mremap move takes the page table
/// entries along).
pub fn copy_page_states(tgid: u32, src: u64, dst: u64, len: u64) {
    let pages = len >> PAGE_SHIFT;
    if pages == 0 {
        return;
    }
    if pages > MAX_CHUNK_LOOPS {
        count_drop(DROP_MAP_FULL);
        return;
    }
    let inst = instance_of(tgid);
    if inst == 0 {
        return;
    }
    let mut ctx = CopyCtx {
        inst,
        _pad: 0,
        src_page: src >> PAGE_SHIFT,
        dst_page: dst >> PAGE_SHIFT,
    };
    // SAFETY: `copy_page_state` matches bpf_loop's callback ABI and `ctx` outlives the call.
    unsafe {
        bpf_loop(
            pages as u32,
            copy_page_state as *mut c_void,
            &mut ctx as *mut CopyCtx as *mut c_void,
            0,
        )
    };
}
