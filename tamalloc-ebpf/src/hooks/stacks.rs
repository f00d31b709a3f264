//! `--stacks`: the user stack of every counted first touch (and the kernel's, when the
//! kernel made the touch: `read(2)` into a region page), counted in `STACK_COUNTS` by
//! (process, region, kind, stack). Called by the fault hooks, after they counted.
//!
//! Cost budget: off (the default), nothing: [`STACKS_ON`] is a read-only global the
//! verifier folds, so the code is gone. On, per first touch: one `bpf_get_stackid` (a
//! frame-pointer walk of the user stack, hashed into `STACK_TRACES`, the same work as
//! bpftrace's `ustack`), one hash lookup and an atomic add. A key seen for the first time
//! also takes the stack with build IDs (`BUILD_ID_STACKS`): per frame a VMA lookup and a
//! read of the file's build-ID note, paid once per key, not per fault, so that stacks of
//! processes that exited before userspace read them still resolve.

use aya_ebpf::{
    helpers::bpf_get_stackid, macros::map, maps::HashMap, maps::StackTrace,
    programs::tracing::StackIdContext,
};
use tamalloc_common::{
    maps::{
        BUILD_ID_STACKS_MAX, BuildIdFrame, DROP_STACKS_FULL, DROP_STACKS_LOST, NO_STACK,
        STACK_COUNTS_MAX, STACK_DEPTH, STACK_TRACES_MAX, StackCount, StackKey,
    },
    trace::FaultKind,
};

use crate::{atomics::atomic_add, maps::count_drop};

/// Set to 1 by the loader with `--stacks`.
#[unsafe(no_mangle)]
static STACKS_ON: u32 = 0;

#[inline(always)]
pub fn enabled() -> bool {
    // SAFETY: a plain read of a global; volatile so that the loader's value is read, not
    // the compile-time zero.
    unsafe { core::ptr::read_volatile(&STACKS_ON) != 0 }
}

/// `bpf_get_stackid` flag: the user stack (`BPF_F_USER_STACK`).
const USER_STACK: u64 = 1 << 8;
/// `BPF_F_STACK_BUILD_ID`: a stack map whose frames are `struct bpf_stack_build_id`.
const STACK_BUILD_ID: u32 = 1 << 5;
const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

#[map]
pub static STACK_TRACES: StackTrace = StackTrace::with_max_entries(STACK_TRACES_MAX, 0);
named_map!(STACK_TRACES);

/// A stack map of `BuildIdFrame`s: aya-ebpf's `StackTrace` has `u64` frames only.
#[repr(transparent)]
pub struct BuildIdStacks(core::cell::UnsafeCell<aya_ebpf::bindings::bpf_map_def>);

// SAFETY: the kernel owns the map; the definition is only read by the loader.
unsafe impl Sync for BuildIdStacks {}

impl BuildIdStacks {
    const fn with_max_entries(max_entries: u32) -> Self {
        Self(core::cell::UnsafeCell::new(
            aya_ebpf::bindings::bpf_map_def {
                type_: aya_ebpf::bindings::bpf_map_type::BPF_MAP_TYPE_STACK_TRACE,
                key_size: size_of::<u32>() as u32,
                value_size: (size_of::<BuildIdFrame>() * STACK_DEPTH) as u32,
                max_entries,
                map_flags: STACK_BUILD_ID,
                id: 0,
                pinning: 0,
            },
        ))
    }
}

#[map]
pub static BUILD_ID_STACKS: BuildIdStacks = BuildIdStacks::with_max_entries(BUILD_ID_STACKS_MAX);
named_map!(BUILD_ID_STACKS);

#[map]
pub static STACK_COUNTS: HashMap<StackKey, StackCount> =
    HashMap::with_max_entries(STACK_COUNTS_MAX, 0);
named_map!(STACK_COUNTS);

/// Counts `pages` first touched by the current thread under its stack. `kernel`: the
/// kernel made the touch, so its stack is taken too.
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "keys by reference: by value, each call copies the key onto the 512-byte stack"
)]
#[inline(always)]
pub fn take<C: StackIdContext>(
    ctx: &C,
    tgid: u32,
    inst: u32,
    region: u64,
    kind: FaultKind,
    pages: u64,
    kernel: bool,
) {
    let user = match ctx.get_stackid(&STACK_TRACES, USER_STACK) {
        Ok(id) => id as i32,
        Err(_) => {
            count_drop(DROP_STACKS_LOST);
            return;
        }
    };
    let kernel = if kernel {
        match ctx.get_stackid(&STACK_TRACES, 0) {
            Ok(id) => id as i32,
            Err(_) => NO_STACK,
        }
    } else {
        NO_STACK
    };
    let key = StackKey {
        region,
        tgid,
        user,
        kernel,
        kind: kind as u32,
        inst,
        _pad: 0,
    };
    if let Some(v) = STACK_COUNTS.get_ptr_mut(&key) {
        // SAFETY: a live map value; threads of the process add to it at once.
        atomic_add(unsafe { &raw mut (*v).pages }, pages);
        return;
    }
    // A new key: inserted before its build-ID stack is taken, so that a full map costs no
    // walk (entries are never deleted: once full, every new key would pay it for nothing).
    let value = StackCount {
        pages,
        build: NO_STACK,
        _pad: 0,
    };
    match STACK_COUNTS.insert(&key, &value, BPF_NOEXIST) {
        Ok(()) => {
            // SAFETY: the context and the map definition are the program's own; the
            // helper validates both.
            let build = unsafe {
                bpf_get_stackid(ctx.as_ptr(), BUILD_ID_STACKS.0.get().cast(), USER_STACK)
            };
            if build >= 0
                && let Some(v) = STACK_COUNTS.get_ptr_mut(&key)
            {
                // SAFETY: a live map value; only its inserter writes `build`, and userspace
                // reads a key's frames once, at a refresh (a refresh in between sees
                // NO_STACK: the live maps still resolve it).
                unsafe { (*v).build = build as i32 };
            }
        }
        // Another thread inserted it first.
        Err(e) if e == -EEXIST => {
            if let Some(v) = STACK_COUNTS.get_ptr_mut(&key) {
                // SAFETY: as above.
                atomic_add(unsafe { &raw mut (*v).pages }, pages);
            }
        }
        Err(_) => count_drop(DROP_STACKS_FULL),
    }
}
