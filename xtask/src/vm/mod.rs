//! `cargo xtask vm`: boot the patched kernel under QEMU and run a command, or give a shell.
//!
//! The command runs as `/cmd` in the initramfs (see `initramfs.rs`); its exit status comes
//! back through the `init: exit=N` console line and becomes ours. The console streams to
//! stdout and to `<cache>/vm/logs/`. QEMU is killed on timeout, on a kernel panic, on
//! Ctrl-C/SIGTERM and whenever this process unwinds (`qemu::Qemu` kills on drop).
//!
//! Inside: `qemu` boots and guards QEMU, `console` follows what the guest prints,
//! `initramfs` packs the guest's root, `guest` builds the project's binaries for it, and
//! `suite` is the VM test suite (`--tests`, and `cargo xtask test`).

use std::{path::PathBuf, time::Duration};

use anyhow::bail;

mod console;
mod guest;
mod initramfs;
mod qemu;
mod suite;

pub use suite::run as run_tests;

use guest::{command_script, guest_binaries};
use initramfs::Initramfs;
use qemu::{BootOptions, Outcome, boot, interactive};

use crate::kernel;

const DEFAULT_TIMEOUT_SECS: u64 = 600;

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// The kernel to boot: 6.1 (Debian 12's) or 6.12 (LTS).
    #[arg(long, value_enum, value_name = "VERSION", default_value_t)]
    pub kernel: kernel::Version,
    /// Boot the debug kernel (lockdep, DEBUG_VM, ...).
    #[arg(long)]
    pub debug: bool,
    /// Kill QEMU after this many seconds (default 600 with a command, none for a shell).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MiB", default_value_t = 1024)]
    pub mem: u32,
    /// Extra file for the guest, e.g. `--file target/foo:/usr/bin/foo` (repeatable).
    #[arg(long = "file", value_name = "HOST:GUEST")]
    pub files: Vec<String>,
    /// Run the VM test suite (kselftest + tests/vm/*.sh) instead of a command.
    #[arg(long, conflicts_with_all = ["cmd", "files", "timeout", "allow_warnings"])]
    pub tests: bool,
    /// Do not fail when the kernel logged BUG/WARNING/lockdep/KASAN/Call Trace lines.
    #[arg(long)]
    pub allow_warnings: bool,
    /// The command to run in the guest (as root); without it, a shell on the console.
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let kernel_args = kernel::Args {
        kernel: args.kernel,
        debug: args.debug,
    };
    if args.tests {
        return suite::run(&kernel_args);
    }
    let mut files = args
        .files
        .iter()
        .map(|f| parse_file_arg(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kernel = kernel::run(&kernel_args)?;
    files.extend(guest_binaries(&kernel));
    let mut initramfs = Initramfs::new();
    for (host, guest) in &files {
        initramfs.file(host, guest.clone());
    }
    if args.cmd.is_empty() {
        return interactive(
            &kernel,
            &initramfs,
            args.mem,
            args.timeout.map(Duration::from_secs),
        );
    }
    initramfs.command(command_script(&args.cmd));
    let opts = BootOptions {
        mem_mib: args.mem,
        timeout: Some(Duration::from_secs(
            args.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS),
        )),
        echo: true,
    };
    let outcome = boot(&kernel, &initramfs, &opts)?;
    finish(&outcome, args.allow_warnings)
}

/// Turns the outcome into our exit status: the guest's, or failure on kernel warnings.
fn finish(outcome: &Outcome, allow_warnings: bool) -> anyhow::Result<()> {
    let warnings = outcome.warnings.unwrap_or(0);
    if outcome.exit != 0 {
        eprintln!(
            "vm: guest command exited with status {} (console log: {})",
            outcome.exit,
            outcome.log.display()
        );
        std::process::exit(outcome.exit.clamp(1, 255));
    }
    if warnings > 0 && !allow_warnings {
        bail!(
            "the kernel logged {warnings} BUG/WARNING/lockdep/KASAN/Call Trace line(s) \
             (see the kernel log dump above or {}; --allow-warnings to ignore)",
            outcome.log.display()
        );
    }
    Ok(())
}

/// `HOST:GUEST` → (host path, absolute guest path).
fn parse_file_arg(arg: &str) -> anyhow::Result<(PathBuf, String)> {
    let Some((host, guest)) = arg.rsplit_once(':') else {
        bail!("--file wants HOST:GUEST, got {arg:?}");
    };
    if host.is_empty() || !guest.starts_with('/') {
        bail!("--file wants HOST:/absolute/guest/path, got {arg:?}");
    }
    let host = PathBuf::from(host);
    if !host.is_file() {
        bail!("--file {arg}: {} is not a file", host.display());
    }
    Ok((host, guest.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_args_are_checked() {
        let (host, guest) = parse_file_arg("/bin/busybox:/usr/bin/bb").unwrap();
        assert_eq!(host, PathBuf::from("/bin/busybox"));
        assert_eq!(guest, "/usr/bin/bb");
        assert!(parse_file_arg("/bin/busybox").is_err());
        assert!(parse_file_arg("/bin/busybox:relative").is_err());
        assert!(parse_file_arg("/nonexistent:/x").is_err());
    }
}
