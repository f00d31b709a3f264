//! Booting QEMU: the command line, KVM or TCG, the guard that stops it, and the console log.

use std::{
    fs::{self, File},
    io,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::Ordering,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};

use super::{
    console::{Watch, spawn_console_reader},
    initramfs::Initramfs,
};
use crate::util::{self, WorkDir, interrupt_flag, interrupted_by};

const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const KEPT_LOGS: usize = 30;

/// How to boot.
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub mem_mib: u32,
    pub timeout: Option<Duration>,
    /// Stream the console to stdout.
    pub echo: bool,
}

/// What a command boot reported.
#[derive(Debug)]
pub struct Outcome {
    /// The `/cmd` exit status.
    pub exit: i32,
    /// `init: kernel-warnings=N`.
    pub warnings: Option<u32>,
    /// The console, line by line.
    pub lines: Vec<String>,
    /// The console log file.
    pub log: PathBuf,
}

/// Boots `kernel/bzImage` with `initramfs` (which must have a command) and waits for it.
pub fn boot(kernel: &Path, initramfs: &Initramfs, opts: &BootOptions) -> anyhow::Result<Outcome> {
    let (_work, cmd) = prepare(kernel, initramfs, opts.mem_mib)?;
    let log = new_log_path()?;
    boot_with(cmd, opts, &log)
}

/// Writes the initrd to a scratch directory (which must outlive QEMU) and returns it with
/// the QEMU command line.
fn prepare(
    kernel: &Path,
    initramfs: &Initramfs,
    mem_mib: u32,
) -> anyhow::Result<(WorkDir, Command)> {
    let work = WorkDir::create(
        &util::cache_dir()
            .join("vm")
            .join(format!("run-{}", std::process::id())),
    )?;
    let initrd = work.path().join("initramfs.cpio.gz");
    initramfs.write(&initrd)?;
    let accel = accel(kernel, work.path())?;
    let cmd = qemu_command(kernel, &initrd, accel, mem_mib);
    Ok((work, cmd))
}

fn boot_with(mut cmd: Command, opts: &BootOptions, log: &Path) -> anyhow::Result<Outcome> {
    let interrupted = interrupt_flag()?;
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    // Its own process group: Ctrl-C reaches us, and we stop QEMU ourselves.
    cmd.process_group(0);
    let mut qemu = Qemu::spawn(&mut cmd)?;
    let stdout = qemu.child.stdout.take().context("QEMU's stdout")?;
    let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let lines = spawn_console_reader(stdout, log_file, opts.echo);
    let mut watch = Watch::new(opts.timeout);
    let result = watch.follow(&lines, &interrupted);
    qemu.stop();
    if let Err(e) = result {
        bail!("{e:#} (console log: {})", log.display());
    }
    match watch.exit {
        Some(exit) => Ok(Outcome {
            exit,
            warnings: watch.warnings,
            lines: watch.lines,
            log: log.to_owned(),
        }),
        None => bail!(
            "the guest stopped without reporting `init: exit=` (QEMU: {}); console log: {}",
            qemu.status_text(),
            log.display()
        ),
    }
}

/// Boots with the console on our terminal (the initramfs gives a shell), until QEMU exits.
pub fn interactive(
    kernel: &Path,
    initramfs: &Initramfs,
    mem_mib: u32,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let (_work, mut cmd) = prepare(kernel, initramfs, mem_mib)?;
    let interrupted = interrupt_flag()?;
    eprintln!("vm: interactive shell; Ctrl-A x quits QEMU");
    let mut qemu = Qemu::spawn(&mut cmd)?;
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if qemu.child.try_wait().context("waiting for QEMU")?.is_some() {
            return Ok(());
        }
        if interrupted.load(Ordering::Relaxed) {
            qemu.stop();
            bail!("{}; QEMU stopped", interrupted_by());
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            qemu.stop();
            bail!("timed out; QEMU killed");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accel {
    Kvm,
    Tcg,
}

fn qemu_command(kernel: &Path, initrd: &Path, accel: Accel, mem_mib: u32) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-m", &mem_mib.to_string(), "-smp", "2"])
        // Like -nographic, minus SeaBIOS's and iPXE's screen-clearing output on the serial
        // line: the console (and, interactively, the monitor: Ctrl-A x) on stdio.
        .args(["-display", "none", "-serial", "mon:stdio", "-nic", "none"])
        .arg("-no-reboot")
        .arg("-kernel")
        .arg(kernel.join("bzImage"))
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 oops=panic quiet loglevel=4",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]);
    match accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
    };
    cmd
}

/// KVM when `/dev/kvm` exists and a probe boot finishes in time (nested KVM can hang),
/// else TCG. The probe result is kept per host boot in /tmp; `TAMALLOC_ACCEL=kvm|tcg`
/// overrides it.
fn accel(kernel: &Path, work: &Path) -> anyhow::Result<Accel> {
    match std::env::var("TAMALLOC_ACCEL").as_deref() {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        _ => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return Ok(Accel::Tcg);
    }
    let cache = probe_cache_path();
    match fs::read_to_string(&cache).as_deref().map(str::trim) {
        Ok("kvm") => return Ok(Accel::Kvm),
        Ok("tcg") => return Ok(Accel::Tcg),
        _ => {}
    }
    let found = probe_kvm(kernel, work);
    if interrupt_flag()?.load(Ordering::Relaxed) {
        bail!("{} while probing KVM", interrupted_by());
    }
    let name = if found == Accel::Kvm { "kvm" } else { "tcg" };
    fs::write(&cache, name).with_context(|| format!("writing {}", cache.display()))?;
    Ok(found)
}

fn probe_cache_path() -> PathBuf {
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    PathBuf::from(format!("/tmp/tamalloc-accel-{boot_id}"))
}

fn probe_kvm(kernel: &Path, work: &Path) -> Accel {
    util::say(
        "Probing",
        &format!(
            "KVM (a boot within {} s, else TCG)",
            PROBE_TIMEOUT.as_secs()
        ),
    );
    let result = (|| -> anyhow::Result<Outcome> {
        let initrd = work.join("probe.cpio.gz");
        Initramfs::new().command("true\n").write(&initrd)?;
        let opts = BootOptions {
            mem_mib: 256,
            timeout: Some(PROBE_TIMEOUT),
            echo: false,
        };
        let log = work.join("probe.log");
        boot_with(qemu_command(kernel, &initrd, Accel::Kvm, 256), &opts, &log)
    })();
    match result {
        Ok(outcome) if outcome.exit == 0 => Accel::Kvm,
        Ok(_) => Accel::Tcg,
        Err(e) => {
            eprintln!("vm: KVM probe failed ({e:#}); using TCG");
            Accel::Tcg
        }
    }
}

/// A running QEMU, stopped (SIGTERM, then SIGKILL) when dropped.
struct Qemu {
    child: Child,
    status: Option<std::process::ExitStatus>,
}

impl Qemu {
    fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        // SAFETY: the closure runs between fork and exec and only calls prctl, which is
        // async-signal-safe; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(|| {
                // Die with us even if we are SIGKILLed and cannot run the guard.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .context("starting qemu-system-x86_64 (cargo xtask setup installs it)")?;
        Ok(Self {
            child,
            status: None,
        })
    }

    /// Stops QEMU if it still runs and reaps it.
    fn stop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.status = Some(status);
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our unreaped
            // child, so it cannot have been recycled for another process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }

    fn status_text(&self) -> String {
        self.status
            .map_or_else(|| "still running".to_owned(), |s| s.to_string())
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh console log path under `<cache>/vm/logs/`, keeping the newest [`KEPT_LOGS`].
fn new_log_path() -> anyhow::Result<PathBuf> {
    let dir = util::cache_dir().join("vm").join("logs");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut old: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    old.sort();
    for path in old.iter().rev().skip(KEPT_LOGS) {
        let _ = fs::remove_file(path);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Ok(dir.join(format!("console-{now}-{}.log", std::process::id())))
}
