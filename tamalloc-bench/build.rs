//! Builds the reference BPF program (tamalloc-bench-ebpf, in ebpf/) into OUT_DIR as
//! `reference`, for `include_bytes_aligned!`; the toolchain choice is tamalloc-build-ebpf's,
//! the same as for the shipped object.

fn main() -> anyhow::Result<()> {
    tamalloc_build_ebpf::build(
        "tamalloc-bench-ebpf",
        concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf"),
    )
}
