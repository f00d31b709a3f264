//! `cargo xtask kernel`: build the patched kernel, cached by the hash of its inputs.
//!
//! Layout under `<cache>/kernel/`:
//! - `src/<tarball-key>/linux-*`: the pristine tree, extracted once per tarball;
//! - `<hash>/`: one build, keyed by the series, every patch, the config fragments and
//!   [`inputs::HARNESS_VERSION`]. It holds `bzImage`, `hdrs/`, `tamalloc_test` (when the
//!   series adds the kselftest), `vmlinux`, `config` and `build.log`; `ok` marks it complete.
//!
//! The patched source (`<hash>/src`, a hard-linked copy of the pristine tree: GNU patch
//! replaces files instead of writing through links) and the objects (`<hash>/obj`) are
//! removed after a successful build. Set `TAMALLOC_KERNEL_PATCHES` to use another patch
//! directory (same layout as `kernel-patch/`) and `TAMALLOC_LINUX_TARBALL` for another source.
//!
//! `inputs` reads and hashes what a build depends on; `build` runs one build.

mod build;
mod inputs;

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use inputs::Inputs;

use crate::util::{self, say};

const DEFAULT_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

#[derive(clap::Args, Debug, Default, Clone)]
pub struct Args {
    /// Also merge `debug.config` (lockdep, DEBUG_VM, ...): a separate, slower kernel.
    #[arg(long)]
    pub debug: bool,
}

/// Builds (or finds in the cache) the kernel and returns its artefact directory.
pub fn run(args: &Args) -> anyhow::Result<PathBuf> {
    let root = util::cache_dir().join("kernel");
    let inputs = Inputs::gather(&patch_dir(), &tarball(), args.debug)?;
    let art = root.join(&inputs.hash);
    if is_complete(&art) {
        return Ok(art);
    }
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = Lock::exclusive(&root.join(".lock"))?;
    // The patches may have changed while another build held the lock.
    let inputs = Inputs::gather(&patch_dir(), &tarball(), args.debug)?;
    let art = root.join(&inputs.hash);
    if !is_complete(&art) {
        build::build(&inputs, &root, &art)?;
    }
    Ok(art)
}

/// The directory holding `series`, the patches and the fragments.
pub fn patch_dir() -> PathBuf {
    std::env::var_os("TAMALLOC_KERNEL_PATCHES")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::workspace_root().join("kernel-patch"))
}

fn tarball() -> PathBuf {
    std::env::var_os("TAMALLOC_LINUX_TARBALL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TARBALL))
}

fn is_complete(art: &Path) -> bool {
    art.join("ok").is_file() && art.join("bzImage").is_file()
}

/// An exclusive `flock` held until drop, so concurrent xtasks build one kernel at a time.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for the lock (saying so once), giving up when we are interrupted.
    pub fn exclusive(path: &Path) -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd as _;
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let interrupted = util::interrupt_flag()?;
        let mut said = false;
        loop {
            // SAFETY: the descriptor is valid for the lifetime of `file`; flock has no
            // other preconditions. The lock is released when `file` is closed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Self { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
            if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                bail!("{}", util::interrupted_by());
            }
            if !said {
                say("Waiting", "for another kernel build to finish");
                said = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}
