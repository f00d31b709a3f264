//! The names of the maps and programs in tamalloc-ebpf's object, defined once for both sides.
//!
//! A map's const has the name of its `#[map]` static, and tamalloc-ebpf ties the two at
//! compile time (its `named_map!`); a program's const in [`prog`] has the name of its
//! function (`named_program!`). The user side loads, resizes and reads by these consts only,
//! and a host test parses the built object and checks that it holds exactly [`ALL_MAPS`] and
//! [`ALL_PROGRAMS`]. Renaming one side alone fails the build or that test, not a load.
//!
//! The keys and values the maps carry are in [`crate::trace`].

/// Tracer settings userspace writes before attaching (`Array<Config>`, index 0).
pub const CONFIG: &str = "CONFIG";
/// Processes userspace asked to follow, and their descendants.
pub const TRACED: &str = "TRACED";
/// Syscall arguments between `sys_enter` and `sys_exit`, per thread.
pub const PENDING: &str = "PENDING";
/// Region pages, per 2 MiB chunk of a process's address space.
pub const CHUNKS: &str = "CHUNKS";
/// A region's identity at the pages that start it.
pub const MARKERS: &str = "MARKERS";
/// Chunk-sized per-CPU buffers (off the 512-byte stack).
pub const CHUNK_BUF: &str = "CHUNK_BUF";
/// Per-process counters, by slot (per CPU).
pub const COUNTERS: &str = "COUNTERS";
/// A live process's counter slot.
pub const SLOTS: &str = "SLOTS";
/// Slots of exited processes, for userspace to read and give back.
pub const RETIRED: &str = "RETIRED";
/// Free counter slots.
pub const FREE_SLOTS: &str = "FREE_SLOTS";
/// Bit `tgid`: the process may have chunks.
pub const PID_GATE: &str = "PID_GATE";
/// The programs `sys_enter`/`sys_exit` tail-call (slots in [`crate::trace::TAIL_PROGRAMS`]).
pub const TAIL_PROGS: &str = "TAIL_PROGS";
/// The event ring.
pub const EVENTS: &str = "EVENTS";
/// Lost events and map inserts, per CPU (slots `crate::trace::DROP_*`).
pub const DROPS: &str = "DROPS";
/// Per-CPU scratch of the marker sweep (private to the programs).
pub const SWEEP: &str = "SWEEP";

/// Every map of the object.
pub const ALL_MAPS: [&str; 15] = [
    CONFIG, TRACED, PENDING, CHUNKS, MARKERS, CHUNK_BUF, COUNTERS, SLOTS, RETIRED, FREE_SLOTS,
    PID_GATE, TAIL_PROGS, EVENTS, DROPS, SWEEP,
];

/// Program names: the functions' names in tamalloc-ebpf.
pub mod prog {
    /// `raw_syscalls:sys_enter`.
    pub const SYS_ENTER: &str = "sys_enter";
    /// `raw_syscalls:sys_exit`.
    pub const SYS_EXIT: &str = "sys_exit";
    /// `sched:sched_process_fork`.
    pub const SCHED_PROCESS_FORK: &str = "sched_process_fork";
    /// `sched:sched_process_exec`.
    pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    /// `sched:sched_process_exit`.
    pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
    /// `exceptions:page_fault_{user,kernel}`, counting.
    pub const PAGE_FAULT: &str = "page_fault";
    /// `exceptions:page_fault_{user,kernel}`, counting and streaming.
    pub const PAGE_FAULT_EVENTS: &str = "page_fault_events";
    // Tail-called from sys_enter/sys_exit (their slots: `crate::trace::TAIL_PROGRAMS`).
    pub const EXIT_LEARN: &str = "exit_learn";
    pub const ENTER_MUNMAP: &str = "enter_munmap";
    pub const EXIT_MREMAP: &str = "exit_mremap";
    pub const EXIT_MREMAP_SHRINK: &str = "exit_mremap_shrink";
    pub const EXIT_MREMAP_GROW: &str = "exit_mremap_grow";
    pub const EXIT_MREMAP_MOVE: &str = "exit_mremap_move";
    pub const EXIT_MREMAP_DROP_OLD: &str = "exit_mremap_drop_old";
    pub const EXIT_MADVISE: &str = "exit_madvise";
    pub const EXIT_MREMAP_CLEAR_TARGET: &str = "exit_mremap_clear_target";
    pub const EXIT_MMAP_FIXED: &str = "exit_mmap_fixed";
}

/// Every program of the object.
pub const ALL_PROGRAMS: [&str; 17] = [
    prog::SYS_ENTER,
    prog::SYS_EXIT,
    prog::SCHED_PROCESS_FORK,
    prog::SCHED_PROCESS_EXEC,
    prog::SCHED_PROCESS_EXIT,
    prog::PAGE_FAULT,
    prog::PAGE_FAULT_EVENTS,
    prog::EXIT_LEARN,
    prog::ENTER_MUNMAP,
    prog::EXIT_MREMAP,
    prog::EXIT_MREMAP_SHRINK,
    prog::EXIT_MREMAP_GROW,
    prog::EXIT_MREMAP_MOVE,
    prog::EXIT_MREMAP_DROP_OLD,
    prog::EXIT_MADVISE,
    prog::EXIT_MREMAP_CLEAR_TARGET,
    prog::EXIT_MMAP_FIXED,
];

/// Whether two names are equal, in a `const` (the ties in tamalloc-ebpf are assertions).
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_listed_once() {
        for list in [&ALL_MAPS[..], &ALL_PROGRAMS[..]] {
            for (i, a) in list.iter().enumerate() {
                assert!(!list[i + 1..].contains(a), "{a} is listed twice");
            }
        }
        assert!(same("EVENTS", EVENTS) && !same("EVENT", EVENTS) && !same("EVENTZ", EVENTS));
    }
}
