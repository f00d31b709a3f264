//! What every task shares: where things are, running commands, scratch directories and
//! the interrupt flag. Depends on no other task module.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use anyhow::{Context as _, bail};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where slow, content-addressed artefacts (kernels) live, outside the clone.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TAMALLOC_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    base.join("tamalloc")
}

/// The cargo that runs us (`CARGO`), in the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Runs `cmd`, failing with its command line when it does not exit 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, failing with its stderr.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The last `n` lines of `text`, for an error message.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Prints a step heading the way cargo does.
pub fn step(what: &str) {
    eprintln!("\x1b[1;32m{what:>12}\x1b[0m");
}

/// Prints one cargo-style status line: `verb` as the heading, then `what`.
pub fn say(verb: &str, what: &str) {
    eprintln!("\x1b[1;32m{verb:>12}\x1b[0m {what}");
}

/// A scratch directory, emptied when created and removed on drop.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let _ = fs::remove_dir_all(path);
        fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

static LAST_SIGNAL: AtomicUsize = AtomicUsize::new(0);

/// A flag raised by SIGINT, SIGTERM or SIGHUP (which then no longer kill us, so that the
/// guards of children, QEMU and kernel builds, run). Installed once per process.
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

/// Whether a signal has raised the flag (false when it is not installed).
pub fn interrupted() -> bool {
    interrupt_flag().is_ok_and(|f| f.load(Ordering::Relaxed))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn work_dir_is_removed_on_drop() {
        let path = std::env::temp_dir().join(format!("xtask-workdir-test-{}", std::process::id()));
        fs::create_dir_all(path.join("stale")).unwrap();
        let dir = WorkDir::create(&path).unwrap();
        assert!(dir.path().is_dir());
        assert!(!path.join("stale").exists());
        drop(dir);
        assert!(!path.exists());
    }
}
