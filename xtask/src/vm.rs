//! `cargo xtask vm`: boot the patched kernel under QEMU and run a command, or give a shell.
//!
//! The command runs as `/cmd` in the initramfs (see `initramfs.rs`); its exit status comes
//! back through the `init: exit=N` console line and becomes ours. The console streams to
//! stdout and to `<cache>/vm/logs/`. QEMU is killed on timeout, on a kernel panic, on
//! Ctrl-C/SIGTERM and whenever this process unwinds ([`Qemu`] kills on drop).

use std::{
    fs::{self, File},
    io::{self, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::{initramfs::Initramfs, kernel, util};

const DEFAULT_TIMEOUT_SECS: u64 = 600;
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const KEPT_LOGS: usize = 30;
/// How long QEMU may take to exit after `/init`'s last line before we stop it.
const DONE_GRACE: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug, Default)]
pub struct Args {
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
    if args.tests {
        return crate::vmtest::run_vm_tests(args.debug);
    }
    let mut files = args
        .files
        .iter()
        .map(|f| parse_file_arg(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let kernel = kernel::run(&kernel::Args { debug: args.debug })?;
    files.extend(guest_binaries(&kernel));
    let mut initramfs = Initramfs::new();
    for (host, guest) in &files {
        initramfs.file(host, guest.clone());
    }
    if args.cmd.is_empty() {
        return interactive(&kernel, &initramfs, args);
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

/// A `/cmd` script running `argv` with each word single-quoted.
pub fn command_script(argv: &[String]) -> String {
    let words: Vec<String> = argv.iter().map(|w| shell_quote(w)).collect();
    format!("{}\n", words.join(" "))
}

pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The project's binaries for the guest: `tamalloc` (built here, if it builds) and the
/// kselftest from the kernel build (if the series has it).
/// `TAMALLOC_VM_NO_USER=1` skips building and adding `tamalloc`.
pub fn guest_binaries(kernel: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    if std::env::var_os("TAMALLOC_VM_NO_USER").is_some() {
        eprintln!("warning: TAMALLOC_VM_NO_USER is set: no /usr/bin/tamalloc in the guest");
    } else {
        match build_tamalloc() {
            Ok(bin) => {
                match build_c_example(&bin) {
                    Ok((example, lib)) => {
                        files.push((example, "/usr/bin/tamalloc-example-c".to_owned()));
                        files.push((lib, GUEST_LIBTAMALLOC.to_owned()));
                    }
                    Err(e) => eprintln!("warning: continuing without the C example: {e:#}"),
                }
                files.push((bin, "/usr/bin/tamalloc".to_owned()));
            }
            Err(e) => eprintln!("warning: continuing without /usr/bin/tamalloc: {e:#}"),
        }
    }
    let test = kernel.join("tamalloc_test");
    if test.is_file() {
        files.push((test, "/usr/bin/tamalloc_test".to_owned()));
    } else {
        eprintln!("warning: no kselftest in this kernel build (series without it)");
    }
    files
}

/// Where the guest has `libtamalloc.so` (not the host's path: the guest mounts a tmpfs on
/// /tmp, and a clone may live there).
const GUEST_LIBTAMALLOC: &str = "/usr/lib/libtamalloc.so";

/// The C API example, linked against the release `libtamalloc.so` next to `tamalloc`, with
/// the guest's library directory as its rpath. Returns the example and the library.
fn build_c_example(tamalloc: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = tamalloc
        .parent()
        .context("the tamalloc binary has no directory")?;
    let root = util::workspace_root();
    let out = dir.join("tamalloc-example-c");
    let lib = dir.join("libtamalloc.so");
    let guest_dir = Path::new(GUEST_LIBTAMALLOC)
        .parent()
        .context("the guest library path has no directory")?;
    util::run(
        Command::new("cc")
            .args(["-O2", "-Wall", "-Werror", "-I"])
            .arg(root.join("tamalloc-user/include"))
            .arg(root.join("tamalloc-user/examples/c/example.c"))
            .arg("-L")
            .arg(dir)
            .arg("-ltamalloc")
            .arg(format!("-Wl,-rpath,{}", guest_dir.display()))
            .arg("-o")
            .arg(&out),
    )
    .context("compiling tamalloc-user/examples/c/example.c")?;
    Ok((out, lib))
}

fn build_tamalloc() -> anyhow::Result<PathBuf> {
    let root = util::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "\x1b[1;32m{:>12}\x1b[0m tamalloc (cargo build --release -p tamalloc-user)",
        "Building"
    );
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "tamalloc-user"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .context("running cargo build -p tamalloc-user")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "cargo build --release -p tamalloc-user failed:\n{}",
            tail.join("\n")
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release/tamalloc");
    if !bin.is_file() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(bin)
}

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
    let work = WorkDir::create()?;
    let initrd = work.path.join("initramfs.cpio.gz");
    initramfs.write(&initrd)?;
    let accel = accel(kernel, &work.path)?;
    let log = new_log_path()?;
    let cmd = qemu_command(kernel, &initrd, accel, opts.mem_mib);
    boot_with(cmd, opts, &log)
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

/// Follows the console lines until QEMU closes it, enforcing the limits.
struct Watch {
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    panic_at: Option<Instant>,
    done_at: Option<Instant>,
    exit: Option<i32>,
    warnings: Option<u32>,
    lines: Vec<String>,
}

impl Watch {
    fn new(timeout: Option<Duration>) -> Self {
        Self {
            deadline: timeout.map(|t| Instant::now() + t),
            timeout,
            panic_at: None,
            done_at: None,
            exit: None,
            warnings: None,
            lines: Vec::new(),
        }
    }

    fn follow(
        &mut self,
        lines: &mpsc::Receiver<String>,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<()> {
        loop {
            if interrupted.load(Ordering::Relaxed) {
                bail!("{}; QEMU stopped", interrupted_by());
            }
            if let Some(at) = self.panic_at {
                // Give the rest of the oops a moment to reach the console.
                if at.elapsed() > Duration::from_secs(2) {
                    bail!("kernel panic; QEMU stopped");
                }
            }
            if self.done_at.is_some_and(|at| at.elapsed() > DONE_GRACE) {
                // `/init` finished but the machine did not go away: stop it ourselves.
                break;
            }
            if self.deadline.is_some_and(|d| Instant::now() > d) {
                let secs = self.timeout.map_or(0, |t| t.as_secs());
                bail!("timed out after {secs} s; QEMU killed (raise --timeout?)");
            }
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => self.see(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if self.panic_at.is_some() {
            bail!("kernel panic");
        }
        Ok(())
    }

    fn see(&mut self, line: String) {
        match parse_console_line(&line) {
            Some(Event::Exit(n)) => self.exit = Some(n),
            Some(Event::Warnings(n)) => self.warnings = Some(n),
            Some(Event::Panic) => self.panic_at = self.panic_at.or(Some(Instant::now())),
            Some(Event::Done) => self.done_at = self.done_at.or(Some(Instant::now())),
            None => {}
        }
        self.lines.push(line);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Exit(i32),
    Warnings(u32),
    /// `init: success` or `init: failure`: the last report line.
    Done,
    Panic,
}

/// Recognizes `/init`'s report lines and kernel panics.
fn parse_console_line(line: &str) -> Option<Event> {
    if line.contains("Kernel panic - not syncing") {
        return Some(Event::Panic);
    }
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("init: exit=") {
        return rest.parse().ok().map(Event::Exit);
    }
    if let Some(rest) = line.strip_prefix("init: kernel-warnings=") {
        return rest.parse().ok().map(Event::Warnings);
    }
    if line == "init: success" || line == "init: failure" {
        return Some(Event::Done);
    }
    None
}

/// Copies the console to stdout (if `echo`) and `log`, and sends each complete line.
fn spawn_console_reader(
    mut from: impl io::Read + Send + 'static,
    mut log: File,
    echo: bool,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut pending = Vec::new();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            // Console and log are best effort: a closed stdout must not stop the VM.
            let _ = log.write_all(chunk);
            if echo {
                let mut out = io::stdout().lock();
                let _ = out.write_all(chunk);
                let _ = out.flush();
            }
            pending.extend_from_slice(chunk);
            for line in take_lines(&mut pending) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(String::from_utf8_lossy(&pending).into_owned());
        }
    });
    rx
}

/// Removes the complete lines from `pending`, without their `\r\n`.
fn take_lines(pending: &mut Vec<u8>) -> Vec<String> {
    let Some(last) = pending.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    let rest = pending.split_off(last + 1);
    let lines = String::from_utf8_lossy(pending)
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    *pending = rest;
    lines
}

fn interactive(kernel: &Path, initramfs: &Initramfs, args: &Args) -> anyhow::Result<()> {
    let work = WorkDir::create()?;
    let initrd = work.path.join("initramfs.cpio.gz");
    initramfs.write(&initrd)?;
    let accel = accel(kernel, &work.path)?;
    let interrupted = interrupt_flag()?;
    let mut cmd = qemu_command(kernel, &initrd, accel, args.mem);
    eprintln!("vm: interactive shell; Ctrl-A x quits QEMU");
    let mut qemu = Qemu::spawn(&mut cmd)?;
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
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

static LAST_SIGNAL: AtomicUsize = AtomicUsize::new(0);

/// A flag raised by SIGINT, SIGTERM or SIGHUP (which then no longer kill us, so that the
/// QEMU guard runs). Installed once per process.
pub fn interrupt_flag() -> anyhow::Result<Arc<AtomicBool>> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    if let Some(flag) = FLAG.get() {
        return Ok(Arc::clone(flag));
    }
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        let record = move || LAST_SIGNAL.store(sig as usize, Ordering::Relaxed);
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        unsafe { signal_hook::low_level::register(sig, record) }
            .context("installing a signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .context("installing a signal handler")?;
    }
    Ok(Arc::clone(FLAG.get_or_init(|| flag)))
}

/// `"interrupted by SIGTERM"` and the like, for error messages.
pub fn interrupted_by() -> String {
    let name = match LAST_SIGNAL.load(Ordering::Relaxed) as i32 {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    };
    format!("interrupted by {name}")
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
    eprintln!(
        "\x1b[1;32m{:>12}\x1b[0m KVM (a boot within {} s, else TCG)",
        "Probing",
        PROBE_TIMEOUT.as_secs()
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

/// A per-process scratch directory under `<cache>/vm/`, removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create() -> anyhow::Result<Self> {
        let path = util::cache_dir()
            .join("vm")
            .join(format!("run-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_lines_are_parsed() {
        assert_eq!(parse_console_line("init: exit=0"), Some(Event::Exit(0)));
        assert_eq!(parse_console_line("init: exit=7\r"), Some(Event::Exit(7)));
        assert_eq!(
            parse_console_line("init: kernel-warnings=3"),
            Some(Event::Warnings(3))
        );
        assert_eq!(
            parse_console_line("[    1.2] Kernel panic - not syncing: Fatal exception"),
            Some(Event::Panic)
        );
        assert_eq!(parse_console_line("echo init: exit=3"), None);
        assert_eq!(parse_console_line("init: exit=abc"), None);
        assert_eq!(parse_console_line("init: success"), Some(Event::Done));
        assert_eq!(parse_console_line("init: failure\r"), Some(Event::Done));
        assert_eq!(parse_console_line("hello"), None);
    }

    #[test]
    fn console_is_split_into_lines() {
        let mut pending = b"one\r\ntwo\nthr".to_vec();
        assert_eq!(take_lines(&mut pending), ["one", "two"]);
        assert_eq!(pending, b"thr");
        pending.extend_from_slice(b"ee\n");
        assert_eq!(take_lines(&mut pending), ["three"]);
        assert!(pending.is_empty());
        assert!(take_lines(&mut pending).is_empty());
    }

    #[test]
    fn watch_collects_exit_and_warnings() {
        let (tx, rx) = mpsc::channel();
        for line in [
            "boot",
            "init: exit=7",
            "init: kernel-warnings=2",
            "init: failure",
        ] {
            tx.send(line.to_owned()).unwrap();
        }
        drop(tx);
        let mut watch = Watch::new(Some(Duration::from_secs(5)));
        watch.follow(&rx, &AtomicBool::new(false)).unwrap();
        assert_eq!(watch.exit, Some(7));
        assert_eq!(watch.warnings, Some(2));
        assert_eq!(watch.lines.len(), 4);
    }

    #[test]
    fn watch_times_out_and_sees_interrupts() {
        let (_tx, rx) = mpsc::channel::<String>();
        let mut watch = Watch::new(Some(Duration::from_millis(150)));
        let err = watch.follow(&rx, &AtomicBool::new(false)).unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        let mut watch = Watch::new(None);
        let err = watch.follow(&rx, &AtomicBool::new(true)).unwrap_err();
        assert!(err.to_string().contains("interrupted"), "{err}");
    }

    #[test]
    fn commands_are_quoted() {
        let argv: Vec<String> = ["sh", "-c", "exit 7", "it's"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(command_script(&argv), "'sh' '-c' 'exit 7' 'it'\\''s'\n");
    }

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
