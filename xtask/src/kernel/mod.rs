//! `cargo xtask kernel`: build the patched kernel, cached by the hash of its inputs.
//!
//! One series per supported kernel ([`Version`]): `kernel-patch/<version>/series` and its
//! patches, applied to Debian's `/usr/src/linux-source-<version>.tar.xz`. The config fragments
//! are shared (`kernel-patch/tamalloc.config`, `debug.config`); a version may add its own
//! (`kernel-patch/<version>/tamalloc.config`, `debug.config`), merged after the shared one.
//!
//! Layout under `<cache>/kernel/`:
//! - `src/<tarball-key>/linux-*`: the pristine tree, extracted once per tarball;
//! - `<hash>/`: one build, keyed by the tarball, the series, every patch, the config
//!   fragments and [`inputs::HARNESS_VERSION`]. It holds `bzImage`, `hdrs/`, `tamalloc_test`
//!   (when the series adds the kselftest), `vmlinux`, `config` and `build.log`; `ok` marks it
//!   complete.
//!
//! The patched source (`<hash>/src`, a hard-linked copy of the pristine tree: GNU patch
//! replaces files instead of writing through links) and the objects (`<hash>/obj`) are
//! removed after a successful build. Set `TAMALLOC_KERNEL_PATCHES` to use another patch
//! directory (same layout as `kernel-patch/`) and `TAMALLOC_LINUX_TARBALL_6_1` or
//! `TAMALLOC_LINUX_TARBALL_6_12` for another source of that version.
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

/// A kernel the series exists for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    /// Debian 12's kernel (linux-source-6.1).
    #[default]
    #[value(name = "6.1")]
    V6_1,
    /// The 6.12 LTS kernel of Debian 13 (linux-source-6.12, from Debian 12's security archive).
    #[value(name = "6.12")]
    V6_12,
}

impl Version {
    /// Every supported kernel, in the order `cargo xtask test` runs them.
    pub const ALL: [Version; 2] = [Version::V6_1, Version::V6_12];

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V6_1 => "6.1",
            Version::V6_12 => "6.12",
        }
    }

    /// The Debian package that ships the source tarball.
    fn package(self) -> String {
        format!("linux-source-{}", self.as_str())
    }

    fn tarball(self) -> PathBuf {
        let var = format!("TAMALLOC_LINUX_TARBALL_{}", self.as_str().replace('.', "_"));
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(format!("/usr/src/{}.tar.xz", self.package())))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(clap::Args, Debug, Default, Clone)]
pub struct Args {
    /// The kernel to build: 6.1 (Debian 12's) or 6.12 (LTS).
    #[arg(long, value_enum, value_name = "VERSION", default_value_t)]
    pub kernel: Version,
    /// Also merge `debug.config` (lockdep, DEBUG_VM, ...): a separate, slower kernel.
    #[arg(long)]
    pub debug: bool,
}

/// Builds (or finds in the cache) the kernel and returns its artefact directory.
pub fn run(args: &Args) -> anyhow::Result<PathBuf> {
    let root = util::cache_dir().join("kernel");
    let inputs = gather(args)?;
    let art = root.join(&inputs.hash);
    if is_complete(&art) {
        return Ok(art);
    }
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _lock = Lock::exclusive(&root.join(".lock"))?;
    // The patches may have changed while another build held the lock.
    let inputs = gather(args)?;
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

fn gather(args: &Args) -> anyhow::Result<Inputs> {
    let tarball = args.kernel.tarball();
    if !tarball.is_file() {
        bail!(
            "no kernel source {} for --kernel {}: install {} (`cargo xtask setup` does)",
            tarball.display(),
            args.kernel,
            args.kernel.package()
        );
    }
    Inputs::gather(&patch_dir(), args.kernel.as_str(), &tarball, args.debug)
}

/// The pristine source tree of `version` (extracted into the cache once) and the paths of its
/// series' patches, in order: what `cargo xtask checkpatch` checks.
pub fn pristine_and_series(version: Version) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let args = Args {
        kernel: version,
        debug: false,
    };
    let inputs = gather(&args)?;
    let root = util::cache_dir().join("kernel");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    // Extracting needs the cache lock (a build may be extracting the same tarball); reading
    // an extracted tree does not, so a check never waits for a build.
    let tree = if build::is_extracted(&inputs, &root) {
        build::pristine_tree(&inputs, &root)?
    } else {
        let _lock = Lock::exclusive(&root.join(".lock"))?;
        build::pristine_tree(&inputs, &root)?
    };
    let dir = patch_dir().join(version.as_str());
    let patches = inputs
        .patches
        .iter()
        .map(|(name, _)| dir.join(name))
        .collect();
    Ok((tree, patches))
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
