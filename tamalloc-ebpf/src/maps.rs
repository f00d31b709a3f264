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

#[map]
pub static CHUNKS: HashMap<ChunkKey, Chunk> = HashMap::with_max_entries(16384, 0);

#[map]
pub static MARKERS: HashMap<MarkerKey, RegionRef> = HashMap::with_max_entries(65536, 0);

/// Per-process counters; a key exists for every process with (or that had) regions.
#[map]
pub static COUNTERS: PerCpuHashMap<u32, PidCounters> = PerCpuHashMap::with_max_entries(8192, 0);

/// `sys_exit` tail-calls the program that handles the syscall being left.
#[map]
pub static EXIT_PROGS: ProgramArray = ProgramArray::with_max_entries(EXIT_SLOTS, 0);
pub use tamalloc_common::trace::{
    EXIT_LEARN, EXIT_MREMAP, EXIT_MREMAP_DROP_OLD, EXIT_MREMAP_GROW, EXIT_MREMAP_MOVE,
    EXIT_MREMAP_SHRINK, EXIT_MUNMAP, EXIT_SLOTS,
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
