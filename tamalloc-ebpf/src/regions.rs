//! Region bookkeeping in `CHUNKS` and `MARKERS` (see `tamalloc_common::trace`).
//!
//! Ranges are walked one 2 MiB chunk per `bpf_loop` iteration, so a region of any size is
//! verified once and costs one map update per chunk. Bitmap words are changed with atomic
//! or/and: faults on other CPUs set zero bits in the same words concurrently.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_for_each_map_elem, bpf_loop},
    macros::map,
    maps::PerCpuArray,
};
use tamalloc_common::trace::{
    CHUNK_PAGES, CHUNK_SHIFT, CHUNK_WORDS, Chunk, ChunkKey, DROP_MAP_FULL, MarkerKey, PAGE_SHIFT,
    PAGE_SIZE, RegionRef,
};

use crate::{
    atomics::{fetch_and, fetch_or},
    maps::{CHUNK_BUF, CHUNKS, MARKERS, SCRATCH_CHUNK, ZERO_CHUNK, claim_slot, count_drop},
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
fn chunk_key(tgid: u32, chunk: u64) -> ChunkKey {
    ChunkKey::new(tgid, chunk)
}

#[inline(always)]
fn marker_key(tgid: u32, page_addr: u64) -> MarkerKey {
    MarkerKey {
        tgid,
        _pad: 0,
        page_addr,
    }
}

/// The chunk of `tgid` holding `addr`, created empty when `create` is set.
#[inline(always)]
fn chunk_ptr(tgid: u32, chunk: u64, create: bool) -> Option<*mut Chunk> {
    let key = chunk_key(tgid, chunk);
    if let Some(p) = CHUNKS.get_ptr_mut(key) {
        return Some(p);
    }
    if !create {
        return None;
    }
    // The slot (and the gate bit) before the chunk: a fault that finds the chunk counts.
    let slot = claim_slot(tgid)?;
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

/// The region and page index of `page` (0..512) in chunk `chunk` of `tgid`, whose entry is
/// `ch`. Callers have checked that the page is in a region.
#[inline(always)]
pub fn resolve(ch: &Chunk, tgid: u32, chunk: u64, page: u64) -> RegionRef {
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
            // SAFETY: plain-data map value read for this program run.
            return match unsafe { MARKERS.get(marker_key(tgid, addr)) } {
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

/// Looks up the region of `addr` in `tgid`, if it is a region page.
#[inline(always)]
pub fn region_at(tgid: u32, addr: u64) -> Option<RegionRef> {
    let chunk = addr >> CHUNK_SHIFT;
    // SAFETY: plain-data map value read for this program run.
    let ch = unsafe { CHUNKS.get(chunk_key(tgid, chunk)) }?;
    let page = (addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1);
    if ch.in_region[((page >> 6) & 7) as usize] & (1 << (page & 63)) == 0 {
        return None;
    }
    Some(resolve(ch, tgid, chunk, page))
}

/// Whether `addr` is a region page of `tgid`.
#[inline(always)]
pub fn is_region_page(tgid: u32, addr: u64) -> bool {
    // SAFETY: plain-data map value read for this program run.
    match unsafe { CHUNKS.get(chunk_key(tgid, addr >> CHUNK_SHIFT)) } {
        Some(ch) => {
            let page = (addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1);
            ch.in_region[((page >> 6) & 7) as usize] & (1 << (page & 63)) != 0
        }
        None => false,
    }
}

/// Gives `page_addr` of `tgid` a start marker naming `r`.
#[inline(always)]
fn set_marker(tgid: u32, page_addr: u64, r: &RegionRef) -> bool {
    let Some(ch) = chunk_ptr(tgid, page_addr >> CHUNK_SHIFT, false) else {
        return false;
    };
    if MARKERS.insert(marker_key(tgid, page_addr), r, 0).is_err() {
        count_drop(DROP_MAP_FULL);
        return false;
    }
    let page = (page_addr >> PAGE_SHIFT) & (CHUNK_PAGES - 1);
    // SAFETY: `ch` is a live map value; the field pointer is in bounds.
    let word = unsafe { &raw mut (*ch).start[((page >> 6) & 7) as usize] };
    fetch_or(word, 1 << (page & 63));
    true
}

#[repr(C)]
struct RangeCtx {
    tgid: u32,
    _pad: u32,
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
    let Some(ch) = chunk_ptr(ctx.tgid, chunk, true) else {
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
    let mut ctx = RangeCtx {
        tgid,
        _pad: 0,
        first_page: addr >> PAGE_SHIFT,
        end_page: (addr + len) >> PAGE_SHIFT,
        id,
        index,
        bytes: 0,
    };
    let n = ctx.chunks();
    if n == 0 {
        return 0;
    }
    if n > MAX_CHUNK_LOOPS {
        count_drop(DROP_MAP_FULL);
        return 0;
    }
    // SAFETY: `add_chunk` matches bpf_loop's callback ABI and `ctx` outlives the call.
    unsafe {
        bpf_loop(
            n as u32,
            add_chunk as *mut c_void,
            &mut ctx as *mut RangeCtx as *mut c_void,
            0,
        )
    };
    set_marker(tgid, addr, &RegionRef { id, index });
    ctx.bytes
}

#[repr(C)]
pub struct MarkerSweep {
    tgid: u32,
    _pad: u32,
    chunk: u64,
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
        let _ = MARKERS.remove(marker_key(ctx.tgid, addr));
    }
    0
}

extern "C" fn remove_chunk(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `RangeCtx` on our stack that `remove` gave it.
    let ctx = unsafe { &mut *(ctx as *mut RangeCtx) };
    let (chunk, lo, hi) = ctx.chunk_span(i);
    let Some(ch) = chunk_ptr(ctx.tgid, chunk, false) else {
        return 0;
    };
    let Some(sweep) = SWEEP.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch value, used by nothing else while this program runs.
    let sweep = unsafe { &mut *sweep };
    sweep.tgid = ctx.tgid;
    sweep.chunk = chunk;
    let mut removed = 0u64;
    let mut left = 0u64;
    let mut any_start = 0u64;
    // Branch-free per word (a zero mask changes nothing), so the verifier walks one path.
    for w in 0..CHUNK_WORDS {
        let m = word_mask(w as u64, lo, hi);
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
        let _ = CHUNKS.remove(chunk_key(ctx.tgid, chunk));
    }
    0
}

/// Forgets `[addr, addr + len)`. The region page right after the range, if any, gets a start
/// marker so that it keeps its identity. Returns the bytes of region pages that went away.
pub fn remove(tgid: u32, addr: u64, len: u64) -> u64 {
    let end = addr + len;
    let after = region_at(tgid, end);
    let mut ctx = RangeCtx {
        tgid,
        _pad: 0,
        first_page: addr >> PAGE_SHIFT,
        end_page: end >> PAGE_SHIFT,
        id: 0,
        index: 0,
        bytes: 0,
    };
    let n = ctx.chunks();
    if n == 0 {
        return 0;
    }
    if n > MAX_CHUNK_LOOPS {
        count_drop(DROP_MAP_FULL);
        return 0;
    }
    // SAFETY: `remove_chunk` matches bpf_loop's callback ABI and `ctx` outlives the call.
    unsafe {
        bpf_loop(
            n as u32,
            remove_chunk as *mut c_void,
            &mut ctx as *mut RangeCtx as *mut c_void,
            0,
        )
    };
    if let Some(r) = after {
        set_marker(tgid, end, &r);
    }
    ctx.bytes
}

extern "C" fn reset_chunk(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the `RangeCtx` on our stack that `reset` gave it.
    let ctx = unsafe { &*(ctx as *const RangeCtx) };
    let (chunk, lo, hi) = ctx.chunk_span(i);
    let Some(ch) = chunk_ptr(ctx.tgid, chunk, false) else {
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
    let mut ctx = RangeCtx {
        tgid,
        _pad: 0,
        first_page: addr >> PAGE_SHIFT,
        end_page: (addr + len) >> PAGE_SHIFT,
        id: 0,
        index: 0,
        bytes: 0,
    };
    let n = ctx.chunks();
    if n == 0 {
        return;
    }
    if n > MAX_CHUNK_LOOPS {
        count_drop(DROP_MAP_FULL);
        return;
    }
    // SAFETY: `reset_chunk` matches bpf_loop's callback ABI and `ctx` outlives the call.
    unsafe {
        bpf_loop(
            n as u32,
            reset_chunk as *mut c_void,
            &mut ctx as *mut RangeCtx as *mut c_void,
            0,
        )
    };
}

#[repr(C)]
struct CopyCtx {
    tgid: u32,
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
    let Some(s) = (unsafe { CHUNKS.get(chunk_key(ctx.tgid, src >> 9)) }) else {
        return 0;
    };
    let sp = src & (CHUNK_PAGES - 1);
    let (sw, sbit) = (((sp >> 6) & 7) as usize, 1u64 << (sp & 63));
    let (zero, present) = (s.zero[sw] & sbit != 0, s.present[sw] & sbit != 0);
    if !zero && !present {
        return 0;
    }
    if let Some(d) = chunk_ptr(ctx.tgid, dst >> 9, false) {
        let dp = dst & (CHUNK_PAGES - 1);
        let (dw, dbit) = (((dp >> 6) & 7) as usize, 1u64 << (dp & 63));
        // SAFETY: `d` is a live map value; the field pointers are in bounds.
        let (dz, dpr) = unsafe { (&raw mut (*d).zero[dw], &raw mut (*d).present[dw]) };
        fetch_or(dz, if zero { dbit } else { 0 });
        fetch_or(dpr, if present { dbit } else { 0 });
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
    let mut ctx = CopyCtx {
        tgid,
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

extern "C" fn fork_chunk(
    _map: *mut c_void,
    key: *mut c_void,
    value: *mut c_void,
    ctx: *mut c_void,
) -> i64 {
    // SAFETY: bpf_for_each_map_elem passes CHUNKS' key and value and our `ProcCtx`.
    let (key, value, ctx) = unsafe {
        (
            &*(key as *const ChunkKey),
            &*(value as *const Chunk),
            &mut *(ctx as *mut ProcCtx),
        )
    };
    if key.tgid() == ctx.from {
        // Whether the child's entries for zero-page pages were copied depends on the VMA
        // having an anon_vma; without the bit, either kind of fault there classifies right.
        let Some(copy) = CHUNK_BUF.get_ptr_mut(SCRATCH_CHUNK) else {
            return 1;
        };
        // SAFETY: this CPU's scratch slot; nothing else uses it during this program.
        let copy = unsafe {
            *copy = *value;
            (*copy).zero = [0; CHUNK_WORDS];
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

extern "C" fn fork_marker(
    _map: *mut c_void,
    key: *mut c_void,
    value: *mut c_void,
    ctx: *mut c_void,
) -> i64 {
    // SAFETY: bpf_for_each_map_elem passes MARKERS' key and value and our `ProcCtx`.
    let (key, value, ctx) = unsafe {
        (
            &*(key as *const MarkerKey),
            &*(value as *const RegionRef),
            &*(ctx as *const ProcCtx),
        )
    };
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
    let p = &mut ctx as *mut ProcCtx as *mut c_void;
    // SAFETY: the callbacks match bpf_for_each_map_elem's ABI and `ctx` outlives the calls.
    unsafe {
        bpf_for_each_map_elem(
            &CHUNKS as *const _ as *mut c_void,
            fork_chunk as *mut c_void,
            p,
            0,
        );
        bpf_for_each_map_elem(
            &MARKERS as *const _ as *mut c_void,
            fork_marker as *mut c_void,
            p,
            0,
        );
    }
    ctx.bytes
}

extern "C" fn forget_chunk(
    _map: *mut c_void,
    key: *mut c_void,
    _value: *mut c_void,
    ctx: *mut c_void,
) -> i64 {
    // SAFETY: bpf_for_each_map_elem passes CHUNKS' key and our `ProcCtx`.
    let (key, ctx) = unsafe { (&*(key as *const ChunkKey), &*(ctx as *const ProcCtx)) };
    if key.tgid() == ctx.from {
        let _ = CHUNKS.remove(key);
    }
    0
}

extern "C" fn forget_marker(
    _map: *mut c_void,
    key: *mut c_void,
    _value: *mut c_void,
    ctx: *mut c_void,
) -> i64 {
    // SAFETY: bpf_for_each_map_elem passes MARKERS' key and our `ProcCtx`.
    let (key, ctx) = unsafe { (&*(key as *const MarkerKey), &*(ctx as *const ProcCtx)) };
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
    let p = &mut ctx as *mut ProcCtx as *mut c_void;
    // SAFETY: the callbacks match bpf_for_each_map_elem's ABI and `ctx` outlives the calls.
    unsafe {
        bpf_for_each_map_elem(
            &CHUNKS as *const _ as *mut c_void,
            forget_chunk as *mut c_void,
            p,
            0,
        );
        bpf_for_each_map_elem(
            &MARKERS as *const _ as *mut c_void,
            forget_marker as *mut c_void,
            p,
            0,
        );
    }
}
