//! Every map the programs share with userspace. Sizes are defaults; the loader may resize.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
};
use tamalloc_common::trace::{
    Chunk, ChunkKey, Config, DROP_SLOTS, Event, MarkerKey, Pending, PidCounters, RegionRef,
};

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Processes userspace asked to follow (and their descendants), with a pid/comm filter.
#[map]
pub static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Syscall arguments between `sys_enter` and `sys_exit`, per thread. LRU: a thread killed
/// inside a syscall never reaches its `sys_exit`.
#[map]
pub static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);

/// Allocated on demand (BPF_F_NO_PREALLOC): room for 512 GiB of region address space
/// without holding that memory while idle.
#[map]
pub static CHUNKS: HashMap<ChunkKey, Chunk> = HashMap::with_max_entries(262_144, BPF_F_NO_PREALLOC);

#[map]
pub static MARKERS: HashMap<MarkerKey, RegionRef> =
    HashMap::with_max_entries(262_144, BPF_F_NO_PREALLOC);

const BPF_F_NO_PREALLOC: u32 = 1;

/// Chunk-sized buffers off the 512-byte stack: slot [`ZERO_CHUNK`] is never written (a
/// zeroed chunk to insert), slot [`SCRATCH_CHUNK`] is a work copy.
#[map]
pub static CHUNK_BUF: PerCpuArray<Chunk> = PerCpuArray::with_max_entries(2, 0);
pub const ZERO_CHUNK: u32 = 0;
pub const SCRATCH_CHUNK: u32 = 1;

/// Per-process counters; a key exists for every process with (or that had) regions.
#[map]
pub static COUNTERS: PerCpuHashMap<u32, PidCounters> = PerCpuHashMap::with_max_entries(8192, 0);

/// The programs `sys_enter`/`sys_exit` tail-call for the syscall at hand.
#[map]
pub static TAIL_PROGS: ProgramArray = ProgramArray::with_max_entries(TAIL_SLOTS, 0);
pub use tamalloc_common::trace::{
    ENTER_MUNMAP, EXIT_LEARN, EXIT_MADVISE, EXIT_MMAP_FIXED, EXIT_MREMAP, EXIT_MREMAP_CLEAR_TARGET,
    EXIT_MREMAP_DROP_OLD, EXIT_MREMAP_GROW, EXIT_MREMAP_MOVE, EXIT_MREMAP_SHRINK, TAIL_SLOTS,
};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);

/// Counts one lost record or map insert in `slot`.
#[inline(always)]
pub fn count_drop(slot: u32) {
    if let Some(p) = DROPS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, this program is its only writer on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config::default(),
    }
}

/// Sends `ev` to userspace, counting it in `drop_slot` when the ring is full.
#[inline(always)]
pub fn emit(ev: &Event, drop_slot: u32) {
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            entry.write(*ev);
            entry.submit(0);
        }
        None => count_drop(drop_slot),
    }
}

/// This CPU's counters of `tgid`, created zeroed on first use.
#[inline(always)]
pub fn counters(tgid: u32) -> Option<*mut PidCounters> {
    if let Some(p) = COUNTERS.get_ptr_mut(tgid) {
        return Some(p);
    }
    let zero = PidCounters::default();
    // BPF_NOEXIST: another CPU may have created it meanwhile; either way look it up again.
    let _ = COUNTERS.insert(tgid, zero, 1);
    let p = COUNTERS.get_ptr_mut(tgid);
    if p.is_none() {
        count_drop(tamalloc_common::trace::DROP_MAP_FULL);
    }
    p
}
