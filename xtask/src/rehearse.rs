//! `cargo xtask rehearse`: the README's two commands on a fresh machine, for real.
//!
//! A machine we work on keeps whatever was installed by hand, and so does CI on it: `rsync`
//! was missing on a fresh machine while CI was green. This task builds a Debian 12 root with
//! `debootstrap --variant=minbase` plus what rustup's toolchain itself needs to build
//! anything (`ca-certificates`, `gcc`, `libc6-dev`: what a fresh machine of ours has), gives
//! it only rustup's toolchains (bind-mounted read-only) and the host's apt sources, clones the
//! repository's committed HEAD into it, and runs `cargo xtask demo` then `cargo xtask test`
//! there as root, as the README tells a new user to. Everything else, bpf-linker and kernel
//! caches included, is built inside from nothing.
//!
//! The kernel, `/proc`, `/sys` and `/dev` are the host's (BPF and QEMU need them), so this
//! rehearses set-up, not the kernel. The minimal root is cached (`<cache>/rehearse/`); each
//! rehearsal copies it and removes its copy afterwards.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::util::{self, is_root};

#[derive(clap::Args)]
pub struct Args {
    /// Rebuild the cached minimal root (it is otherwise built once and reused).
    #[arg(long)]
    pub fresh_base: bool,
    /// Run only `cargo xtask test` (skip the main job).
    #[arg(long)]
    pub skip_demo: bool,
    /// Keep the rehearsal root afterwards (its path is printed) to look around in it.
    #[arg(long)]
    pub keep: bool,
    /// Rehearse only the set-up (`cargo xtask setup`, run twice: the second run must print
    /// nothing): minutes, not the hour the kernels take, for a change to the set-up alone.
    #[arg(long, conflicts_with = "skip_demo")]
    pub setup_only: bool,
}

const SUITE: &str = "bookworm";
/// What rustup's toolchain needs before `cargo xtask setup` can even be compiled.
const BASE_EXTRA: &str = "ca-certificates,gcc,libc6-dev";
/// Inside the root: the clone, and the PATH a root login on a fresh machine has.
const CLONE: &str = "/root/tamalloc";
/// `sh -c` script run as `ENTER ROOT CMD...` in a new mount namespace: make ROOT the root.
const ENTER: &str = "set -e; mount --rbind \"$0\" \"$0\"; cd \"$0\"; mkdir -p .oldroot; \
    pivot_root . .oldroot; cd /; umount -l /.oldroot; rmdir /.oldroot; exec \"$@\"";
const PATH: &str = "/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn run(args: &Args) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the rehearsal builds a root file system and enters it: run it as root");
    }
    // A signal must not end us before the guard below unmounts what it mounted.
    let interrupted = util::interrupt_flag()?;
    crate::setup::run(&crate::setup::Args::default()).context("set-up (debootstrap, git)")?;
    let started = Instant::now();
    let base = base_root(args.fresh_base)?;
    let work = PathBuf::from(format!("/var/tmp/tamalloc-rehearse-{}", std::process::id()));
    let root = work.join("root");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut rehearsal = Rehearsal {
        work,
        root,
        mounts: Vec::new(),
        keep: args.keep,
    };
    util::step("Copying the minimal root");
    util::run(Command::new("cp").arg("-a").arg(&base).arg(&rehearsal.root))?;
    rehearsal.prepare()?;
    let mut commands = Vec::new();
    if args.setup_only {
        // The second run checks idempotence: set-up that finds everything prints nothing.
        commands.push("cargo xtask setup");
        commands.push("out=$(cargo xtask setup 2>&1) && test -z \"$out\" || { echo \"a second set-up printed: $out\"; false; }");
    } else {
        if !args.skip_demo {
            commands.push("cargo xtask demo");
        }
        commands.push("cargo xtask test");
    }
    let mut timings = Vec::new();
    for command in commands {
        util::step(&format!("Rehearsing `{command}`"));
        let t = Instant::now();
        rehearsal
            .run(command, &interrupted)
            .with_context(|| format!("`{command}` failed on the fresh root"))?;
        timings.push((command, t.elapsed()));
    }
    for (command, took) in &timings {
        println!("rehearse: `{command}` passed in {}", minutes(*took));
    }
    println!("rehearse: all in {}", minutes(started.elapsed()));
    Ok(())
}

fn minutes(d: Duration) -> String {
    format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
}

/// The cached `debootstrap --variant=minbase` root, built when missing.
fn base_root(fresh: bool) -> anyhow::Result<PathBuf> {
    let dir = util::cache_dir().join("rehearse");
    let base = dir.join(format!("{SUITE}-minbase"));
    let done = dir.join(format!("{SUITE}-minbase.complete"));
    if done.exists() && !fresh {
        return Ok(base);
    }
    let _ = fs::remove_file(&done);
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&dir)?;
    let mirror = debian_mirror()?;
    util::step("Building a minimal Debian 12 root (debootstrap, a few minutes)");
    let log = dir.join("debootstrap.log");
    let status = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={BASE_EXTRA}"),
            SUITE,
        ])
        .arg(&base)
        .arg(&mirror)
        .stdout(fs::File::create(&log)?)
        .stderr(Stdio::from(fs::File::options().append(true).open(&log)?))
        .status()
        .context("running debootstrap")?;
    if !status.success() {
        bail!("debootstrap failed ({status}); its log: {}", log.display());
    }
    fs::write(&done, b"")?;
    Ok(base)
}

/// The Debian mirror the host's apt uses, so the root fetches from where the host may.
fn debian_mirror() -> anyhow::Result<String> {
    for (_, text) in apt_sources() {
        for line in text.lines().map(str::trim) {
            let uri = line.strip_prefix("URIs:").map(str::trim).or_else(|| {
                line.strip_prefix("deb ")
                    .and_then(|l| l.split_whitespace().next())
            });
            if let Some(uri) = uri.and_then(|u| u.split_whitespace().next())
                && !uri.contains("security")
                && uri.contains("debian")
            {
                return Ok(uri.to_owned());
            }
        }
    }
    bail!("no Debian mirror in /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources")
}

/// The host's enabled apt source files (path, text).
fn apt_sources() -> Vec<(PathBuf, String)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sources" || x == "list"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files
        .into_iter()
        .filter_map(|p| fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect()
}

/// One rehearsal root: what is mounted into it is unmounted, and the copy removed, on drop.
struct Rehearsal {
    work: PathBuf,
    root: PathBuf,
    /// Mount points, in the order they were made.
    mounts: Vec<PathBuf>,
    keep: bool,
}

impl Rehearsal {
    fn inside(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn prepare(&mut self) -> anyhow::Result<()> {
        // The host's apt sources (the fresh machine's: main, updates, security) and DNS.
        let apt = self.inside("/etc/apt");
        let _ = fs::remove_file(apt.join("sources.list"));
        for (path, text) in apt_sources() {
            let rel = path.strip_prefix("/etc/apt").unwrap_or(&path);
            let to = apt.join(rel);
            fs::create_dir_all(to.parent().unwrap_or(&apt))?;
            fs::write(&to, text).with_context(|| format!("writing {}", to.display()))?;
        }
        // What the machine itself is configured with, not the project: DNS, apt's settings,
        // and its trust store (this workplace's network presents its own CA).
        let mut machine: Vec<PathBuf> = [
            "/etc/resolv.conf",
            "/etc/hosts",
            "/etc/ssl/certs/ca-certificates.crt",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect();
        for dir in ["/etc/apt/apt.conf.d", "/usr/local/share/ca-certificates"] {
            if let Ok(entries) = fs::read_dir(dir) {
                machine.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
            }
        }
        for f in machine {
            if let Ok(bytes) = fs::read(&f) {
                let to = self.inside(&f.to_string_lossy());
                fs::create_dir_all(to.parent().unwrap_or(&self.root))?;
                let _ = fs::remove_file(&to);
                fs::write(&to, bytes).with_context(|| format!("writing {}", to.display()))?;
            }
        }
        // The kernel's file systems: the tracer loads BPF and reads tracefs, the tests boot
        // QEMU. rslave, so that unmounting them here never unmounts the host's.
        self.mount(&["-t", "proc", "proc"], "/proc")?;
        for fs_dir in ["/sys", "/dev"] {
            self.mount(&["--rbind", fs_dir], fs_dir)?;
            util::run(
                Command::new("mount")
                    .arg("--make-rslave")
                    .arg(self.inside(fs_dir)),
            )?;
        }
        self.give_rustup()?;
        // The committed HEAD, as CI and a new user clone it.
        util::step("Cloning the repository into the fresh root");
        util::run(
            Command::new("git")
                .args(["clone", "--quiet", "--no-hardlinks"])
                .arg(util::workspace_root())
                .arg(self.inside(CLONE)),
        )
    }

    /// rustup's toolchains (read-only) and its proxies, nothing else of the host's Rust
    /// set-up: not bpf-linker, not the registry cache, not linked toolchains.
    fn give_rustup(&mut self) -> anyhow::Result<()> {
        let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
        let rustup =
            std::env::var_os("RUSTUP_HOME").map_or_else(|| home.join(".rustup"), PathBuf::from);
        let cargo =
            std::env::var_os("CARGO_HOME").map_or_else(|| home.join(".cargo"), PathBuf::from);
        let to_rustup = self.inside("/root/.rustup");
        for sub in ["", "toolchains", "update-hashes"] {
            fs::create_dir_all(to_rustup.join(sub))?;
        }
        fs::copy(
            rustup.join("settings.toml"),
            to_rustup.join("settings.toml"),
        )
        .context("copying rustup's settings.toml")?;
        if let Ok(hashes) = fs::read_dir(rustup.join("update-hashes")) {
            for h in hashes.flatten() {
                fs::copy(
                    h.path(),
                    to_rustup.join("update-hashes").join(h.file_name()),
                )?;
            }
        }
        for t in fs::read_dir(rustup.join("toolchains"))
            .context("listing rustup's toolchains")?
            .flatten()
        {
            // A link is a toolchain set-up made (`rustup toolchain link`), not rustup's.
            if t.file_type()?.is_symlink() {
                continue;
            }
            let inside = format!(
                "/root/.rustup/toolchains/{}",
                t.file_name().to_string_lossy()
            );
            fs::create_dir_all(self.inside(&inside))?;
            self.mount(&["--bind", &t.path().to_string_lossy()], &inside)?;
            util::run(
                Command::new("mount")
                    .args(["-o", "remount,bind,ro"])
                    .arg(self.inside(&inside)),
            )?;
        }
        // rustup and its proxies (cargo, rustc, ...): links to it, or copies of it.
        let bin = self.inside("/root/.cargo/bin");
        fs::create_dir_all(&bin)?;
        let rustup_bin = fs::read(cargo.join("bin/rustup")).context("reading rustup")?;
        for e in fs::read_dir(cargo.join("bin"))?.flatten() {
            let to = bin.join(e.file_name());
            if e.file_type()?.is_symlink() {
                let target = fs::read_link(e.path())?;
                if target.file_name().is_some_and(|n| n == "rustup") {
                    std::os::unix::fs::symlink(&target, &to)?;
                }
            } else if fs::metadata(e.path())?.len() == rustup_bin.len() as u64
                && fs::read(e.path())? == rustup_bin
            {
                fs::copy(e.path(), &to)?;
            }
        }
        Ok(())
    }

    fn mount(&mut self, how: &[&str], at: &str) -> anyhow::Result<()> {
        let point = self.inside(at);
        fs::create_dir_all(&point)?;
        util::run(Command::new("mount").args(how).arg(&point))?;
        self.mounts.push(point);
        Ok(())
    }

    /// Runs `command` in the clone inside the root, with a fresh login's environment.
    fn run(&self, command: &str, interrupted: &AtomicBool) -> anyhow::Result<()> {
        // The machine's own environment for its network (CA bundles, proxies), nothing of
        // ours.
        let network: Vec<String> = std::env::vars()
            .filter(|(k, _)| {
                let k = k.to_ascii_uppercase();
                k.contains("PROXY")
                    || k.contains("CA_")
                    || k.contains("CERT")
                    || k.starts_with("SSL_")
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        // Not chroot: the kernel refuses user namespaces to a chrooted process, which a
        // fresh machine is not (a test runs `unshare --user`). So, as containers do: a
        // private mount namespace whose root is pivoted to ours, the host's unmounted.
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            ENTER,
        ])
        .arg(&self.root)
        .args([
            "/usr/bin/env",
            "-i",
            "HOME=/root",
            "USER=root",
            "LANG=C.UTF-8",
            "CI=true",
        ])
        .args(network)
        .arg(format!("PATH={PATH}"))
        .args(["/bin/bash", "-c", &format!("cd {CLONE} && {command}")])
        .stdin(Stdio::null())
        // Its own process group, so that a signal to us stops all of it.
        .process_group(0);
        let mut child = cmd.spawn().context("starting unshare")?;
        let pgid = child.id().cast_signed();
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("{status}");
                }
                return Ok(());
            }
            if interrupted.load(Ordering::Relaxed) {
                // SAFETY: kill(2) on the group we created; no memory is involved.
                unsafe { libc::kill(-pgid, libc::SIGTERM) };
                let _ = child.wait();
                bail!("{}", util::interrupted_by());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether anything is still mounted at or below the root.
    fn still_mounted(&self) -> bool {
        let root = self.root.to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.split(' ').nth(4))
                    .any(|m| m == root || m.starts_with(&format!("{root}/")))
            })
            .unwrap_or(true)
    }
}

impl Drop for Rehearsal {
    fn drop(&mut self) {
        for point in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-R").arg(point).status();
        }
        if self.keep {
            eprintln!("rehearse: the root is kept at {}", self.root.display());
            return;
        }
        // Never delete through a mount: /dev and the toolchains are the host's.
        if self.still_mounted() {
            eprintln!(
                "rehearse: something is still mounted below {}; not removing it (umount -R it, \
                 then remove {})",
                self.root.display(),
                self.work.display()
            );
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.work) {
            eprintln!("rehearse: could not remove {}: {e}", self.work.display());
        }
    }
}
