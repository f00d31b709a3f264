//! `cargo xtask test`: the README's test command, and what CI runs.
//!
//! Stages run in order and stop at the first failure: set-up, fmt, clippy, the eBPF crate's
//! own clippy, unit + host integration tests (the tracer tests load BPF, so root; the
//! Perfetto UI test drives the chromium, puppeteer-core and UI that set-up installs), checkpatch
//! --strict on both kernel series, then the patched kernels under QEMU: every supported kernel (6.1, 6.12) normal, then each debug
//! (cheap failures first), each built once and cached by the hash of its inputs.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{
    kernel::{self, Version},
    util::{self, cargo, is_root},
};

#[derive(clap::Args)]
pub struct Args {
    /// Skip building and booting the patched kernels (host tests only).
    #[arg(long)]
    pub no_vm: bool,
    /// Skip the debug-config kernels (lockdep, DEBUG_VM, KASAN).
    #[arg(long)]
    pub no_debug_kernel: bool,
    /// Test only this kernel (default: 6.1 and 6.12).
    #[arg(long, value_enum, value_name = "VERSION")]
    pub kernel: Option<Version>,
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
        util::step("checkpatch");
        crate::checkpatch::run(&crate::checkpatch::Args {
            kernel: args.kernel,
        })
        .context("stage `checkpatch` failed")?;
        passed += 1;
        for k in kernels(args) {
            let what = if k.debug { "debug kernel" } else { "kernel" };
            crate::vm::run_tests(&k)
                .with_context(|| format!("tests in the patched {} {what}", k.kernel))?;
            passed += 1;
        }
    }
    println!("xtask test: {passed} passed, 0 failed");
    Ok(())
}

/// The kernels to test, in order: every selected version normal, then each debug.
fn kernels(args: &Args) -> Vec<kernel::Args> {
    let versions: Vec<Version> = match args.kernel {
        Some(v) => vec![v],
        None => Version::ALL.to_vec(),
    };
    let debugs: &[bool] = if args.no_debug_kernel {
        &[false]
    } else {
        &[false, true]
    };
    debugs
        .iter()
        .flat_map(|&debug| {
            versions
                .iter()
                .map(move |&kernel| kernel::Args { kernel, debug })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(args: &Args) -> Vec<String> {
        kernels(args)
            .iter()
            .map(|k| format!("{}{}", k.kernel, if k.debug { "d" } else { "" }))
            .collect()
    }

    #[test]
    fn both_kernels_normal_first() {
        let mut args = Args {
            no_vm: false,
            no_debug_kernel: false,
            kernel: None,
        };
        assert_eq!(names(&args), ["6.1", "6.12", "6.1d", "6.12d"]);
        args.kernel = Some(Version::V6_12);
        assert_eq!(names(&args), ["6.12", "6.12d"]);
        args.no_debug_kernel = true;
        assert_eq!(names(&args), ["6.12"]);
    }
}
