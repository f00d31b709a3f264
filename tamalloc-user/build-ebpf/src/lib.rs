//! Builds one of the workspace's eBPF crates for `bpfel-unknown-none` and leaves its object
//! in the calling build script's OUT_DIR, for `include_bytes_aligned!`. Both build scripts
//! use it: tamalloc-user's (the shipped tracer, tamalloc-ebpf) and tamalloc-bench's (the
//! reference program, tamalloc-bench-ebpf), so they pick the toolchain the same way.
//!
//! The BPF target needs the core library's source (`-Z build-std=core`). rustup cannot
//! download rust-src here, so the toolchain is, in order of preference:
//! 1. `$TAMALLOC_BPF_TOOLCHAIN`, if set;
//! 2. rustup's `nightly`, when it has rust-src;
//! 3. `tamalloc-bpf`: Debian's rustc-web linked into rustup by `cargo xtask setup`, with
//!    `RUSTC_BOOTSTRAP=1` to unlock build-std on a stable compiler.
//!
//! Errors are `anyhow` like aya-build's own: the only caller is a build script's `main`.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};
use aya_build::{Package, Toolchain};

const SETUP_HINT: &str = "run `cargo xtask setup` (as root on Debian 12) to install it";

/// Builds the binaries of eBPF package `name` (its manifest in `root_dir`) into OUT_DIR.
/// Call it from a build script only: it prints cargo directives and sets the process's
/// environment for the cargo it runs.
pub fn build(name: &str, root_dir: &str) -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=TAMALLOC_BPF_TOOLCHAIN");
    let chosen = choose_toolchain()?;
    if which_bpf_linker().is_none() {
        bail!("bpf-linker is not on PATH; {SETUP_HINT}");
    }
    if chosen != "nightly" {
        // SAFETY: build scripts are single-threaded; aya-build reads it and passes it on to
        // the cargo that builds the eBPF crate.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    let toolchain = match chosen.as_str() {
        "nightly" => Toolchain::Nightly,
        other => Toolchain::Custom(other),
    };
    let package = Package {
        name,
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], toolchain)
        .with_context(|| format!("building the eBPF programs of {name} with toolchain `{chosen}`"))
}

/// The rustup name under which `cargo xtask setup` links Debian's rustc-web.
pub const LINKED_TOOLCHAIN: &str = "tamalloc-bpf";

/// The rustup toolchain that builds (and lints) the eBPF crates, in the order above.
pub fn choose_toolchain() -> anyhow::Result<String> {
    if let Ok(t) = std::env::var("TAMALLOC_BPF_TOOLCHAIN") {
        Ok(t)
    } else if has_core_source("nightly") {
        Ok("nightly".to_owned())
    } else if has_core_source(LINKED_TOOLCHAIN) {
        Ok(LINKED_TOOLCHAIN.to_owned())
    } else {
        bail!(
            "no Rust toolchain with the core library source for the BPF target: neither rustup's \
             nightly with rust-src nor the `tamalloc-bpf` toolchain (Debian's rustc-web + \
             rust-web-src); {SETUP_HINT}"
        )
    }
}

/// Whether rustup's `toolchain` has the core library's source (for `-Z build-std=core`).
pub fn has_core_source(toolchain: &str) -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
