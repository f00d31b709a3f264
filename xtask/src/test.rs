//! `cargo xtask test`: the README's test command, and what CI runs.
//!
//! Stages run in order and stop at the first failure: set-up, fmt, clippy, the eBPF crate's
//! own clippy, unit + host integration tests (the tracer tests load BPF, so root), then the
//! patched kernels under QEMU (normal and debug config).

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::util::{self, cargo, is_root};

#[derive(clap::Args)]
pub struct Args {
    /// Skip building and booting the patched kernels (host tests only).
    #[arg(long)]
    pub no_vm: bool,
    /// Skip the debug-config kernel (lockdep, DEBUG_VM, KASAN).
    #[arg(long)]
    pub no_debug_kernel: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "the test suite loads eBPF programs into the kernel and needs root: \
             run `sudo -E cargo xtask test` (or as root)"
        );
    }
    crate::setup::run(&crate::setup::Args::default()).context("set-up")?;
    let mut passed = 0;
    let mut stage = |name: &str, cmd: &mut Command| -> anyhow::Result<()> {
        util::step(name);
        util::run(cmd).with_context(|| format!("stage `{name}` failed"))?;
        passed += 1;
        Ok(())
    };
    stage("fmt", cargo().args(["fmt", "--all", "--", "--check"]))?;
    stage(
        "clippy",
        cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )?;
    // The eBPF crates (the product's and the bench's reference program) only build for the
    // BPF target, with the toolchain their build scripts use.
    let toolchain = crate::setup::bpf_toolchain()?;
    let mut ebpf_clippy = Command::new("rustup");
    ebpf_clippy
        .current_dir(util::workspace_root())
        .args([
            "run",
            &toolchain,
            "cargo",
            "clippy",
            "--package",
            "tamalloc-ebpf",
            "--package",
            "tamalloc-bench-ebpf",
            "--bins",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        .env(
            "CARGO_TARGET_DIR",
            util::workspace_root().join("target/ebpf-clippy"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    if toolchain != "nightly" {
        ebpf_clippy.env("RUSTC_BOOTSTRAP", "1");
    }
    stage("clippy (eBPF)", &mut ebpf_clippy)?;
    stage("test", cargo().args(["test", "--", "--test-threads=1"]))?;
    if !args.no_vm {
        crate::vm::run_tests(false).context("tests in the patched kernel")?;
        passed += 1;
        if !args.no_debug_kernel {
            crate::vm::run_tests(true).context("tests in the debug kernel")?;
            passed += 1;
        }
    }
    println!("xtask test: {passed} passed, 0 failed");
    Ok(())
}
