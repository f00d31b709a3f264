//! Builds the shipped eBPF object (tamalloc-ebpf) into OUT_DIR as `tamalloc`, for
//! `include_bytes_aligned!`; the toolchain choice is tamalloc-build-ebpf's (build-ebpf/).

fn main() -> anyhow::Result<()> {
    tamalloc_build_ebpf::build(
        "tamalloc-ebpf",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tamalloc-ebpf"),
    )
}
