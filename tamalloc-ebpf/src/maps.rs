//! Every map the programs share with userspace. Sizes are defaults; the loader may resize.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, Queue, RingBuf},
};
use tamalloc_common::{
    maps::{
        ANON_NAME_MAX, Chunk, ChunkKey, Config, DROP_FAULT_EVENTS, DROP_MAP_FULL, DROP_SLOTS, Heap,
        MAX_PROCS, MarkerKey, PID_GATE_WORDS, Pending, PidCounters, RegionRef,
    },
    trace::Event,
};

use crate::atomics::{fetch_and, fetch_or};

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
named_map!(CONFIG);

/// Processes userspace asked to follow (and their descendants), with a pid/comm filter.
#[map]
pub static TRACED: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);
named_map!(TRACED);

/// Syscall arguments between `sys_enter` and `sys_exit`, per thread. LRU: a thread killed
/// inside a syscall never reaches its `sys_exit`.
#[map]
pub static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);
named_map!(PENDING);

/// Allocated on demand (BPF_F_NO_PREALLOC): room for 512 GiB of region address space
/// without holding that memory while idle.
#[map]
pub static CHUNKS: HashMap<ChunkKey, Chunk> = HashMap::with_max_entries(262_144, BPF_F_NO_PREALLOC);
named_map!(CHUNKS);

#[map]
pub static MARKERS: HashMap<MarkerKey, RegionRef> =
    HashMap::with_max_entries(262_144, BPF_F_NO_PREALLOC);
named_map!(MARKERS);

const BPF_F_NO_PREALLOC: u32 = 1;

/// `--regions anon`: each followed process's heap as its `brk` calls made it.
#[map]
pub static HEAPS: HashMap<u32, Heap> = HashMap::with_max_entries(MAX_PROCS, 0);
named_map!(HEAPS);

/// `--regions name:NAME`: NAME, NUL-padded.
#[map]
pub static REGION_NAME: Array<[u8; ANON_NAME_MAX]> = Array::with_max_entries(1, 0);
named_map!(REGION_NAME);

/// Chunk-sized buffers off the 512-byte stack: slot [`ZERO_CHUNK`] is never written (a
/// zeroed chunk to insert), slot [`SCRATCH_CHUNK`] is a work copy.
#[map]
pub static CHUNK_BUF: PerCpuArray<Chunk> = PerCpuArray::with_max_entries(2, 0);
named_map!(CHUNK_BUF);
pub const ZERO_CHUNK: u32 = 0;
pub const SCRATCH_CHUNK: u32 = 1;

/// Per-process counters, by slot (see [`claim_slot`]).
#[map]
pub static COUNTERS: PerCpuArray<PidCounters> = PerCpuArray::with_max_entries(MAX_PROCS, 0);
named_map!(COUNTERS);

/// The counter slot of every live process with (or that had) regions.
#[map]
pub static SLOTS: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PROCS, 0);
named_map!(SLOTS);

/// Slots of exited processes (slot -> tgid), moved out of `SLOTS` at exit so that a new
/// process with a reused pid gets a slot of its own. Userspace reads their final counts,
/// zeroes them and queues them in `FREE_SLOTS`.
#[map]
pub static RETIRED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PROCS, 0);
named_map!(RETIRED);

/// Free slots, zeroed: all of them at load (userspace fills the queue), then those
/// userspace gave back.
#[map]
pub static FREE_SLOTS: Queue<u32> = Queue::with_max_entries(MAX_PROCS, 0);
named_map!(FREE_SLOTS);

/// Bit `tgid`: the process has a slot (so it may have chunks). Bits are set before a
/// process's first chunk exists and cleared after its last one is gone, so a clear bit
/// lets the fault path return after one array read.
#[map]
pub static PID_GATE: Array<u64> = Array::with_max_entries(PID_GATE_WORDS, 0);
named_map!(PID_GATE);

/// The programs `sys_enter`/`sys_exit` tail-call for the syscall at hand.
#[map]
pub static TAIL_PROGS: ProgramArray = ProgramArray::with_max_entries(TAIL_SLOTS, 0);
named_map!(TAIL_PROGS);
pub use tamalloc_common::maps::{
    ENTER_MUNMAP, EXIT_BRK, EXIT_LEARN, EXIT_MADVISE, EXIT_MMAP, EXIT_MPROTECT, EXIT_MREMAP,
    EXIT_MREMAP_CLEAR_TARGET, EXIT_MREMAP_DROP_OLD, EXIT_MREMAP_GROW, EXIT_MREMAP_MOVE,
    EXIT_MREMAP_SHRINK, EXIT_MUNMAP, EXIT_PRCTL, TAIL_SLOTS,
};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
named_map!(EVENTS);

#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);
named_map!(DROPS);

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
            entry.submit(wakeup(drop_slot));
        }
        None => count_drop(drop_slot),
    }
}

/// The submit flags of an event: a fault event wakes the reader only once
/// `Config::wakeup_bytes` wait in the ring (batched wake-ups: the reader drains on a short
/// timer too, every 50 ms); control events (regions, exits...) keep the ring's own
/// adaptive wake-up, as before: it wakes a reader that has caught up.
#[inline(always)]
fn wakeup(drop_slot: u32) -> u64 {
    if drop_slot != DROP_FAULT_EVENTS {
        return 0;
    }
    let threshold = CONFIG.get(0).map_or(0, |c| c.wakeup_bytes);
    if threshold == 0 {
        0
    } else if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= u64::from(threshold) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Whether `tgid` may have chunks (its `PID_GATE` bit).
#[inline(always)]
pub fn gated_in(tgid: u32) -> bool {
    match PID_GATE.get(tgid >> 6) {
        Some(w) => *w & (1 << (tgid & 63)) != 0,
        None => false,
    }
}

/// Clears `tgid`'s `PID_GATE` bit, once it has no chunks left.
#[inline(always)]
pub fn gate_out(tgid: u32) {
    if let Some(w) = PID_GATE.get_ptr_mut(tgid >> 6) {
        fetch_and(w, !(1 << (tgid & 63)));
    }
}

/// `tgid`'s counter slot, if it has one.
#[inline(always)]
pub fn slot_of(tgid: u32) -> Option<u32> {
    // SAFETY: plain-data map value read for this program run.
    unsafe { SLOTS.get(tgid) }.copied()
}

/// `tgid`'s counter slot, taken from the free ones on first use; opens its gate.
#[inline(always)]
pub fn claim_slot(tgid: u32) -> Option<u32> {
    let slot = match slot_of(tgid) {
        Some(s) => s,
        None => {
            let Ok(Some(fresh)) = FREE_SLOTS.pop() else {
                count_drop(DROP_MAP_FULL);
                return None;
            };
            // BPF_NOEXIST: a concurrent claimer may have won; then give ours back.
            if SLOTS.insert(tgid, fresh, 1).is_err() {
                let _ = FREE_SLOTS.push(fresh, 0);
            }
            slot_of(tgid)?
        }
    };
    if let Some(w) = PID_GATE.get_ptr_mut(tgid >> 6) {
        fetch_or(w, 1 << (tgid & 63));
    }
    Some(slot)
}

/// This CPU's counters in `slot`.
#[inline(always)]
pub fn slot_counters(slot: u32) -> Option<*mut PidCounters> {
    COUNTERS.get_ptr_mut(slot)
}

/// Hands an exited process's slot to userspace (`RETIRED`).
#[inline(always)]
pub fn retire_slot(tgid: u32, slot: u32) {
    let _ = SLOTS.remove(tgid);
    if RETIRED.insert(slot, tgid, 0).is_err() {
        count_drop(DROP_MAP_FULL);
    }
}

/// This CPU's counters of `tgid`, giving it a slot on first use.
#[inline(always)]
pub fn counters(tgid: u32) -> Option<*mut PidCounters> {
    slot_counters(claim_slot(tgid)?)
}
