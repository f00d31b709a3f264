//! `--stacks`: typed readers of the stack maps (`STACK_COUNTS`, `STACK_TRACES`,
//! `BUILD_ID_STACKS`), the user halves of tamalloc-ebpf's `hooks/stacks.rs`.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{Array, HashMap as BpfHashMap, Map, StackTraceMap};
use tamalloc_common::maps::{self as name, BuildIdFrame, STACK_DEPTH, StackCount, StackKey};

use super::{Probe, maps::map_ref, refused};
use crate::tracer::TraceError;

/// `BPF_MAP_LOOKUP_ELEM`'s part of `union bpf_attr`.
#[repr(C)]
struct LookupAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;

/// The kernel refuses a stack map whose stacks are deeper than `kernel.perf_event_max_stack`,
/// and the object holds two (empty without `--stacks`, but created all the same): say so,
/// and how to raise it, before the loader's opaque refusal.
pub(super) fn check_stack_depth() -> Result<(), TraceError> {
    const PATH: &str = "/proc/sys/kernel/perf_event_max_stack";
    let Ok(text) = std::fs::read_to_string(PATH) else {
        // Older kernels have no such limit.
        return Ok(());
    };
    match text.trim().parse::<usize>() {
        Ok(n) if n < STACK_DEPTH => Err(TraceError::Usage(format!(
            "kernel.perf_event_max_stack is {n}, below the {STACK_DEPTH} frames tamalloc's \
             stack maps hold; as root run: sysctl -w kernel.perf_event_max_stack={STACK_DEPTH}"
        ))),
        _ => Ok(()),
    }
}

impl Probe {
    /// Whether `--stacks` programs were loaded.
    pub fn stacks(&self) -> bool {
        self.stacks
    }

    /// Every (process, region, kind, stack) counted so far, with its pages.
    pub fn stack_counts(&self) -> Result<Vec<(StackKey, StackCount)>, TraceError> {
        let map: BpfHashMap<_, StackKey, StackCount> =
            BpfHashMap::try_from(map_ref(&self.ebpf, name::STACK_COUNTS)?).map_err(refused)?;
        // An entry deleted while iterating (none are) would end the walk early, not fail it.
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    /// `tgid`'s instance now (0: none): a stack key of another instance was taken in an
    /// address space that is gone (an exec, or a reused pid).
    pub fn instance(&self, tgid: u32) -> Result<u32, TraceError> {
        let map: Array<_, u32> =
            Array::try_from(map_ref(&self.ebpf, name::INSTANCE)?).map_err(refused)?;
        Ok(map.get(&tgid, 0).unwrap_or(0))
    }

    /// The instruction addresses of stack `id` of `STACK_TRACES`, innermost first; empty
    /// when it is not there.
    pub fn stack_addrs(&self, id: i32) -> Result<Vec<u64>, TraceError> {
        let Ok(id) = u32::try_from(id) else {
            return Ok(Vec::new());
        };
        let map =
            StackTraceMap::try_from(map_ref(&self.ebpf, name::STACK_TRACES)?).map_err(refused)?;
        Ok(match map.get(&id, 0) {
            Ok(trace) => trace.frames().iter().map(|f| f.ip).collect(),
            Err(_) => Vec::new(),
        })
    }

    /// The frames of stack `id` of `BUILD_ID_STACKS`, innermost first, up to the first
    /// empty one; empty when it is not there. aya reads only address stacks, so this is
    /// the bare `BPF_MAP_LOOKUP_ELEM`.
    pub fn build_id_stack(&self, id: i32) -> Result<Vec<BuildIdFrame>, TraceError> {
        let Ok(id) = u32::try_from(id) else {
            return Ok(Vec::new());
        };
        let Map::StackTraceMap(data) = map_ref(&self.ebpf, name::BUILD_ID_STACKS)? else {
            return Err(TraceError::Internal(
                "BUILD_ID_STACKS is not a stack map".into(),
            ));
        };
        let empty = BuildIdFrame {
            status: 0,
            build_id: [0; 20],
            offset_or_ip: 0,
        };
        let mut frames = vec![empty; STACK_DEPTH];
        let attr = LookupAttr {
            map_fd: data.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const id) as u64,
            value: frames.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: `attr` names a live map fd, a 4-byte key and a value buffer of the map's
        // value size (STACK_DEPTH frames); the kernel writes only into that buffer.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_ELEM,
                &raw const attr,
                size_of::<LookupAttr>(),
            )
        };
        if ret != 0 {
            return Ok(Vec::new());
        }
        let n = frames
            .iter()
            .position(|f| f.status == 0)
            .unwrap_or(frames.len());
        frames.truncate(n);
        Ok(frames)
    }
}
