//! Types shared by the tamalloc eBPF programs, the userspace tracer and the syscall ABI.
//!
//! `abi` mirrors `include/uapi/linux/tamalloc.h` from the kernel patch; `maps` names the
//! eBPF object's maps and programs for both sides and holds what the maps carry; `trace`
//! holds the fault kinds, their classification and the ring's records. Everything here is `#[repr(C)]`
//! plain data so that both sides read the same bytes.
#![no_std]

pub mod abi;
pub mod maps;
pub mod trace;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], Copy, has no padding the kernel or eBPF side
    // leaves uninitialised (explicit `_pad` fields), and any bit pattern is a valid value.
    unsafe impl aya::Pod for crate::maps::PidCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::ChunkKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::Chunk {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::MarkerKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::RegionRef {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::Pending {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::KernelLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::Heap {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::Marker {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::StackKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::StackCount {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::maps::Proc {}
}
