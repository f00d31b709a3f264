//! `sched` tracepoints: a forked child gets a copy of its parent's regions before it first
//! runs; exec and exit end a process's instance at once (O(1): userspace deletes its
//! entries later), so a reused address or pid never counts.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::bpf_map_lookup_percpu_elem,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use tamalloc_common::{
    abi::{SYS_CLONE, SYS_CLONE3, SYS_FORK, SYS_VFORK},
    maps::{
        DROP_CONTROL_EVENTS, DROP_MAP_FULL, DROP_TRACED_FULL, MAX_CPUS, PidCounters,
        TRACED_FROM_EXEC, TRACED_NOW,
    },
    trace::{Event, EventKind},
};

use crate::{
    hooks::syscalls::{SYS_EXIT, add_reserved, anon_regions, tracked},
    maps::{
        COUNTERS, HEAPS, PENDING, TRACED, config, count_drop, emit, end_instance, retire_slot,
        slot_counters, slot_of, start_instance,
    },
    regions,
};

const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_THREAD: u64 = 0x10000;

#[inline(always)]
fn lifecycle_event(kind: EventKind, tgid: u32, tid: u32, arg1: u64) {
    emit(
        &Event {
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            addr: 0,
            arg1,
            arg2: 0,
            arg3: 0,
            pid: tgid,
            tid,
            kind: kind as u8,
            detail: 0,
            _pad: [0; 6],
        },
        DROP_CONTROL_EVENTS,
    );
}

/// The clone flags of the syscall the current thread is in, from its `sys_enter` stash;
/// `None` when they are not known (the stash was evicted, or clone3's struct unreadable).
#[inline(always)]
fn clone_flags(pid_tgid: u64) -> Option<u64> {
    // SAFETY: plain-data map value read for this program run.
    let p = unsafe { PENDING.get(pid_tgid) }?;
    match p.nr as i64 {
        SYS_CLONE => Some(p.args[0]),
        // struct clone_args starts with `__aligned_u64 flags`.
        // SAFETY: bpf_probe_read_user copes with any user pointer.
        SYS_CLONE3 => unsafe { bpf_probe_read_user(p.args[0] as *const u64) }.ok(),
        SYS_FORK => Some(0),
        SYS_VFORK => Some(CLONE_VM | CLONE_VFORK),
        _ => None,
    }
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let parent = (pid_tgid >> 32) as u32;
    let tracked = tracked(parent);
    // `--regions anon`: a heap the programs know of goes to the child even from a process
    // not (yet) tracked, and no child keeps a stale one of a reused pid.
    let anon = anon_regions();
    if !tracked && !anon {
        return 0;
    }
    // Never guess: a thread taken for a process would be followed for ever.
    let Some(flags) = clone_flags(pid_tgid) else {
        if tracked {
            count_drop(DROP_CONTROL_EVENTS);
        }
        return 0;
    };
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let offset = (config().fork_child_pid_offset & 0xff) as usize;
    // The offset is only known at run time, and direct context reads need a constant one.
    // SAFETY: read_at copes with any offset (bpf_probe_read_kernel).
    let Ok(child) = (unsafe { ctx.read_at::<i32>(offset) }) else {
        return 0;
    };
    let child = child as u32;
    if child == 0 {
        return 0;
    }
    if anon && flags & CLONE_VM == 0 {
        copy_heap(parent, child);
    }
    if !tracked {
        return 0;
    }
    // The child is followed as its parent is (now, or from its exec on).
    // SAFETY: plain-data map value, copied out.
    if let Some(&how) = unsafe { TRACED.get(parent) }
        && TRACED.insert(child, how, 0).is_err()
    {
        // The child and its descendants are not followed: said in the drops record.
        count_drop(DROP_TRACED_FULL);
    }
    // A parent without a counter slot has no regions: nothing to copy, no walk of the maps.
    if flags & CLONE_VM == 0 && slot_of(parent).is_some() {
        let bytes = regions::fork(parent, child);
        if bytes != 0 {
            add_reserved(child, bytes, false);
        }
    }
    lifecycle_event(EventKind::Fork, parent, pid_tgid as u32, u64::from(child));
    0
}
named_program!(sched_process_fork = SCHED_PROCESS_FORK);

/// Brings the reserved bytes in `slot`, summed over CPUs, back to zero (through the slot, not
/// the pid: a pid's lookup would claim a slot and reopen the gate of an exiting process).
#[inline(always)]
fn clear_reserved(slot: u32) {
    let ncpus = config().nr_cpus.min(MAX_CPUS);
    let mut total = 0u64;
    let mut cpu = 0u32;
    while cpu < MAX_CPUS && cpu < ncpus {
        // SAFETY: the helper returns NULL or a pointer to that CPU's value.
        let p = unsafe {
            bpf_map_lookup_percpu_elem(
                &COUNTERS as *const _ as *mut _,
                &slot as *const u32 as *const _,
                cpu,
            )
        } as *const PidCounters;
        if !p.is_null() {
            // SAFETY: non-null map value pointer.
            total = total.wrapping_add(unsafe { (*p).reserved_bytes });
        }
        cpu += 1;
    }
    if let Some(c) = slot_counters(slot) {
        // SAFETY: this CPU's copy of a per-CPU value: no other writer.
        unsafe { (*c).reserved_bytes = (*c).reserved_bytes.wrapping_sub(total) };
    }
}

/// The child's heap is a copy of the parent's (`--regions anon`), or unknown.
#[inline(always)]
fn copy_heap(parent: u32, child: u32) {
    // SAFETY: plain-data map value, copied out.
    match unsafe { HEAPS.get(parent) }.copied() {
        Some(heap) => {
            if HEAPS.insert(child, heap, 0).is_err() {
                count_drop(DROP_MAP_FULL);
            }
        }
        None => forget_heap(child),
    }
}

/// A new image (exec) or none (exit): the heap the programs knew is gone.
#[inline(always)]
fn forget_heap(tgid: u32) {
    // SAFETY: only the presence of the key is used.
    if unsafe { HEAPS.get(tgid).is_some() } {
        let _ = HEAPS.remove(tgid);
    }
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    forget_heap(tgid);
    // The command `trace -- CMD` runs: followed from here on.
    // SAFETY: plain-data map value, copied out.
    if unsafe { TRACED.get(tgid) } == Some(&TRACED_FROM_EXEC) {
        let _ = TRACED.insert(tgid, TRACED_NOW, 0);
    }
    if let Some(slot) = slot_of(tgid) {
        // A new address space: a new instance, which its first region opens.
        end_instance(tgid, slot);
        start_instance(slot);
        clear_reserved(slot);
    } else if !tracked(tgid) {
        return 0;
    }
    // Followed processes report exec even without regions (a vfork child, say): their
    // command name changes.
    lifecycle_event(EventKind::Exec, tgid, pid_tgid as u32, 0);
    0
}
named_program!(sched_process_exec = SCHED_PROCESS_EXEC);

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let group_dead = (config().exit_group_dead_offset & 0xff) as usize;
    if group_dead != 0 {
        // The kernel says when the last thread goes, whichever it is: a leader leaving
        // first with exit(2), or killed by another thread's exec (which keeps the pid and
        // gets a new address space), ends nothing.
        // SAFETY: read_at copes with any offset (bpf_probe_read_kernel).
        if !matches!(unsafe { ctx.read_at::<u8>(group_dead) }, Ok(d) if d != 0) {
            return 0;
        }
    } else {
        // Older kernels: only the group leader's exit ends the address space's
        // bookkeeping, and not when the leader leaves with exit(2) while other threads go
        // on (userspace cleans up once the whole process is gone).
        if tgid != pid_tgid as u32 {
            return 0;
        }
        // SAFETY: plain-data map value read for this program run.
        if unsafe { PENDING.get(pid_tgid) }.is_some_and(|p| p.nr == SYS_EXIT as u64) {
            let _ = PENDING.remove(pid_tgid);
            return 0;
        }
    }
    // SAFETY: only the presence of the key is used.
    if unsafe { TRACED.get(tgid).is_some() } {
        let _ = TRACED.remove(tgid);
    }
    forget_heap(tgid);
    let Some(slot) = slot_of(tgid) else {
        return 0;
    };
    // Faults of this pid skip the chunk lookup again.
    end_instance(tgid, slot);
    clear_reserved(slot);
    retire_slot(tgid, slot);
    lifecycle_event(EventKind::Exit, tgid, pid_tgid as u32, 0);
    0
}
named_program!(sched_process_exit = SCHED_PROCESS_EXIT);
