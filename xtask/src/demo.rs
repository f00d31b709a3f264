//! `cargo xtask demo`: the README's main job. Sets up, builds, and traces the demo
//! workload live: on the host (stock kernel, documented fallback) or, with `--vm`, inside
//! the patched kernel under QEMU (real syscalls 554/555/556).

use std::process::Command;

use anyhow::Context as _;

use crate::util::{self, is_root};

#[derive(clap::Args)]
pub struct Args {
    /// Run inside the patched kernel under QEMU instead of on the host.
    #[arg(long)]
    pub vm: bool,
    /// Size of the demo allocation.
    #[arg(long, default_value = "64MiB")]
    pub size: String,
    /// How fast the demo touches it.
    #[arg(long, default_value = "16MiB/s")]
    pub rate: String,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    crate::setup::run(&crate::setup::Args::default()).context("set-up")?;
    let demo = [
        "demo",
        "--size",
        &args.size,
        "--rate",
        &args.rate,
        "--read-first",
        "--hold",
        "2s",
    ];
    if args.vm {
        // `cargo xtask vm -- CMD` builds the kernel and initramfs and returns CMD's status.
        let xtask = std::env::current_exe().context("locating xtask")?;
        return util::run(
            Command::new(xtask)
                .args([
                    "vm",
                    "--",
                    "tamalloc",
                    "trace",
                    "--interval",
                    "1s",
                    "--",
                    "tamalloc",
                ])
                .args(demo),
        );
    }
    util::step("Building");
    util::run(util::cargo().args(["build", "--release", "--quiet", "-p", "tamalloc-user"]))?;
    let bin = util::target_dir().join("release/tamalloc");
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else {
        let mut c = Command::new("sudo");
        c.arg(&bin);
        c
    };
    cmd.args(["trace", "--interval", "1s", "--"])
        .arg(&bin)
        .args(demo);
    util::run(&mut cmd)
}
