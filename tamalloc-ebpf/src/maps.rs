//! Every map the programs share with userspace. Sizes are defaults; the loader may resize.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, Queue, RingBuf},
};
use tamalloc_common::{
    maps::{
        ANON_NAME_MAX, Chunk, ChunkKey, Config, DROP_FAULT_EVENTS, DROP_MAP_FULL, DROP_SLOTS, Heap,
        MAX_PROCS, Marker, MarkerKey, PID_LIMIT, Pending, PidCounters, Proc, dead_entry,
        next_instance,
    },
    trace::Event,
};

use crate::atomics::{atomic_add, atomic_sub};

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
pub static MARKERS: HashMap<MarkerKey, Marker> =
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

/// A marker being stored (off the stack, see `regions::set_marker`).
#[map]
pub static MARKER_BUF: PerCpuArray<Marker> = PerCpuArray::with_max_entries(1, 0);
named_map!(MARKER_BUF);

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

/// `tgid` -> its instance, the key of its chunks and markers; 0 when it has none. Set
/// before a process's first chunk exists and cleared when its address space ends (exit,
/// exec), so a zero lets the fault path return after one array read.
#[map]
pub static INSTANCE: Array<u32> = Array::with_max_entries(PID_LIMIT, 0);
named_map!(INSTANCE);

/// Per counter slot: the process's instance, fork epoch and origin (sized like `COUNTERS`).
#[map]
pub static PROC: Array<Proc> = Array::with_max_entries(MAX_PROCS, 0);
named_map!(PROC);

/// Ended instances (with their pid, `dead_entry`), for userspace to delete their chunks and
/// (once no child needs them) their markers.
#[map]
pub static DEAD: Queue<u64> = Queue::with_max_entries(2 * MAX_PROCS, 0);
named_map!(DEAD);

/// Instance -> processes linked to it as their origin (twice `COUNTERS`' room: ended
/// origins wait here for their last child).
#[map]
pub static ORIGIN_REFS: HashMap<u32, u64> = HashMap::with_max_entries(2 * MAX_PROCS, 0);
named_map!(ORIGIN_REFS);

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

/// `tgid`'s instance, 0 when it has no chunks.
#[inline(always)]
pub fn instance_of(tgid: u32) -> u32 {
    match INSTANCE.get(tgid) {
        Some(i) => *i,
        None => 0,
    }
}

/// `tgid`'s counter slot, if it has one.
#[inline(always)]
pub fn slot_of(tgid: u32) -> Option<u32> {
    // SAFETY: plain-data map value read for this program run.
    unsafe { SLOTS.get(tgid) }.copied()
}

/// Gives the process in `slot` its next instance, with no origin (a new process, or an
/// exec). A generation whose markers a live child still holds (an `ORIGIN_REFS` entry) is
/// skipped, so that a wrapped generation never shares keys with them.
#[inline(always)]
pub fn start_instance(slot: u32) -> Option<u32> {
    let p = PROC.get_ptr_mut(slot)?;
    // SAFETY: a live map value; the slot's one owner writes it: the claimer that popped it
    // (before publishing it), or the process at exec (its only thread then). Field by
    // field: a whole `Proc` would be built on the stack first.
    unsafe {
        // A slot userspace recycled without seeing its process's exit still links it.
        if (*p).origin != 0 {
            unlink_origin((*p).origin);
        }
        let mut inst = next_instance((*p).inst, slot);
        for _ in 0..3 {
            if ORIGIN_REFS.get(inst).is_none() {
                break;
            }
            inst = next_instance(inst, slot);
        }
        (*p).inst = inst;
        (*p).origin = 0;
        (*p).epoch = 0;
        (*p).origin_epoch = 0;
        Some(inst)
    }
}

/// `tgid`'s counter slot and instance, taken on first use (a slot from the free ones, a
/// fresh instance); opens its `INSTANCE` gate.
#[inline(always)]
pub fn claim(tgid: u32) -> Option<(u32, u32)> {
    let slot = match slot_of(tgid) {
        Some(s) => s,
        None => {
            let Ok(Some(fresh)) = FREE_SLOTS.pop() else {
                count_drop(DROP_MAP_FULL);
                return None;
            };
            // The instance before the slot is published: whoever finds the slot finds it.
            start_instance(fresh)?;
            // BPF_NOEXIST: a concurrent claimer may have won; then give ours back.
            if SLOTS.insert(tgid, fresh, 1).is_err() {
                let _ = FREE_SLOTS.push(fresh, 0);
            }
            slot_of(tgid)?
        }
    };
    let inst = PROC.get(slot)?.inst;
    let g = INSTANCE.get_ptr_mut(tgid)?;
    // SAFETY: a live map value; every writer stores this same value, or 0 at the end of
    // the address space.
    unsafe { *g = inst };
    // A thread still in a syscall while its process exits (6.1 runs `sys_exit` before the
    // kill) must not reopen the gate of a retired slot: then the slot is gone from SLOTS.
    if slot_of(tgid) != Some(slot) {
        // SAFETY: as above.
        unsafe { *g = 0 };
        return None;
    }
    Some((slot, inst))
}

/// `tgid`'s counter slot, taken on first use (see [`claim`]).
#[inline(always)]
pub fn claim_slot(tgid: u32) -> Option<u32> {
    claim(tgid).map(|(slot, _)| slot)
}

/// The process in `slot` (`tgid`) lost its address space (exit or exec): its instance is
/// closed (`INSTANCE` 0) and queued for userspace to delete, and its link to its origin
/// dropped. O(1): no map is walked.
#[inline(always)]
pub fn end_instance(tgid: u32, slot: u32) {
    // The instance in use, if any: one opened since the last exec (else it has no entries).
    let mut used = 0;
    if let Some(g) = INSTANCE.get_ptr_mut(tgid) {
        // SAFETY: a live map value (see `claim`).
        unsafe {
            used = *g;
            *g = 0;
        }
    }
    let Some(p) = PROC.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: a live map value; exit and exec run when no other thread of the process does.
    let origin = unsafe { (*p).origin };
    if origin != 0 {
        unlink_origin(origin);
        // SAFETY: as above.
        unsafe { (*p).origin = 0 };
    }
    // With the pid: userspace closes a gate a dying thread reopened (see `claim`).
    if used != 0 && DEAD.push(dead_entry(tgid, used), 0).is_err() {
        // Its entries stay until the tracer ends (counted; no live process finds them).
        count_drop(DROP_MAP_FULL);
    }
}

/// One process fewer whose origin is `origin`.
#[inline(always)]
pub fn unlink_origin(origin: u32) {
    if let Some(r) = ORIGIN_REFS.get_ptr_mut(origin) {
        atomic_sub(r, 1);
    }
}

/// One process more whose origin is `origin`; false when `ORIGIN_REFS` is full.
#[inline(always)]
pub fn link_origin(origin: u32) -> bool {
    // BPF_NOEXIST: an existing count is kept.
    let _ = ORIGIN_REFS.insert(origin, 0u64, 1);
    match ORIGIN_REFS.get_ptr_mut(origin) {
        Some(r) => {
            atomic_add(r, 1);
            true
        }
        None => {
            count_drop(DROP_MAP_FULL);
            false
        }
    }
}

/// Whether some live process has `inst` as its origin (its markers must stay).
#[inline(always)]
pub fn has_children(inst: u32) -> bool {
    // SAFETY: plain-data map value read for this program run.
    unsafe { ORIGIN_REFS.get(inst) }.is_some_and(|n| *n != 0)
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
