//! `cargo xtask kernel`: build the patched kernel, cached by the hash of its inputs.
//!
//! Layout under `<cache>/kernel/`:
//! - `src/<tarball-key>/linux-*`: the pristine tree, extracted once per tarball;
//! - `<hash>/`: one build, keyed by the series, every patch, the config fragments and
//!   [`HARNESS_VERSION`]. It holds `bzImage`, `hdrs/`, `tamalloc_test` (when the series
//!   adds the kselftest), `vmlinux`, `config` and `build.log`; `ok` marks it complete.
//!
//! The patched source (`<hash>/src`, a hard-linked copy of the pristine tree: GNU patch
//! replaces files instead of writing through links) and the objects (`<hash>/obj`) are
//! removed after a successful build. Set `TAMALLOC_KERNEL_PATCHES` to use another patch
//! directory (same layout as `kernel-patch/`) and `TAMALLOC_LINUX_TARBALL` for another source.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};

use crate::util::{self, say};

/// Bump when the way a kernel is built changes, so that old artefacts are not reused.
pub const HARNESS_VERSION: &str = "tamalloc-kernel-harness-1";

const DEFAULT_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
const KSELFTEST: &str = "tools/testing/selftests/tamalloc/tamalloc_test.c";

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
        build(&inputs, &root, &art)?;
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

/// Everything a build depends on, read once: what is hashed is what is built.
#[derive(Debug)]
struct Inputs {
    tarball: PathBuf,
    tarball_key: String,
    /// (file name, contents) of each patch, in series order.
    patches: Vec<(String, Vec<u8>)>,
    /// (file name, contents) of each config fragment, in merge order.
    fragments: Vec<(String, Vec<u8>)>,
    hash: String,
}

impl Inputs {
    fn gather(dir: &Path, tarball: &Path, debug: bool) -> anyhow::Result<Self> {
        let tarball_key = tarball_key(tarball)?;
        let series_path = dir.join("series");
        let series = match fs::read_to_string(&series_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", series_path.display())),
        };
        let patches = read_all(dir, parse_series(&series))?;
        let mut fragment_names = vec!["tamalloc.config".to_owned()];
        if debug {
            fragment_names.push("debug.config".to_owned());
        }
        let fragments = read_all(dir, fragment_names)?;
        let mut parts = vec![
            ("tarball".to_owned(), tarball_key.clone().into_bytes()),
            ("series".to_owned(), series.into_bytes()),
        ];
        parts.extend(patches.iter().chain(&fragments).cloned());
        let hash = hash_inputs(HARNESS_VERSION, &parts);
        Ok(Self {
            tarball: tarball.to_owned(),
            tarball_key,
            patches,
            fragments,
            hash,
        })
    }
}

fn read_all(dir: &Path, names: Vec<String>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    names
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok((name, data))
        })
        .collect()
}

/// Writes the inputs to `<art>/inputs/` and returns the paths of the patches and fragments.
fn snapshot(inputs: &Inputs, art: &Path) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let dir = art.join("inputs");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |files: &[(String, Vec<u8>)]| -> anyhow::Result<Vec<PathBuf>> {
        files
            .iter()
            .map(|(name, data)| {
                let path = dir.join(name);
                fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
                Ok(path)
            })
            .collect()
    };
    Ok((write(&inputs.patches)?, write(&inputs.fragments)?))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The patch file names of a quilt-style `series` (comments, blank lines and options dropped).
fn parse_series(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// A hex sha256 over the version and every (name, content) pair, each length-prefixed so
/// that moving bytes between parts changes the hash.
fn hash_inputs(version: &str, parts: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    let mut feed = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    feed(version.as_bytes());
    for (name, data) in parts {
        feed(name.as_bytes());
        feed(data);
    }
    hex::encode(h.finalize())[..16].to_owned()
}

/// Identifies the tarball cheaply (name, size, mtime) without reading 140 MB.
fn tarball_key(tarball: &Path) -> anyhow::Result<String> {
    let meta = fs::metadata(tarball).with_context(|| {
        format!(
            "kernel source {} (install linux-source-6.1)",
            tarball.display()
        )
    })?;
    let stem = file_name(tarball)
        .trim_end_matches(".xz")
        .trim_end_matches(".tar")
        .to_owned();
    Ok(format!("{stem}-{}-{}", meta.size(), meta.mtime()))
}

fn build(inputs: &Inputs, root: &Path, art: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    if art.exists() {
        say("Removing", &format!("incomplete build {}", art.display()));
        fs::remove_dir_all(art).with_context(|| format!("removing {}", art.display()))?;
    }
    fs::create_dir_all(art).with_context(|| format!("creating {}", art.display()))?;
    let log = BuildLog::create(&art.join("build.log"))?;
    let pristine = pristine_tree(inputs, root)?;
    let src = art.join("src");
    let obj = art.join("obj");
    let result = build_in(inputs, &log, &pristine, &src, &obj, art);
    if let Err(e) = result {
        if !util::interrupted() {
            log.print_tail(40);
        }
        return Err(e.context(format!(
            "kernel build failed; full log: {}",
            log.path.display()
        )));
    }
    for dir in [&src, &obj] {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    File::create(art.join("ok")).context("marking the build complete")?;
    say(
        "Finished",
        &format!("kernel {} in {:.0?}", art.display(), started.elapsed()),
    );
    Ok(())
}

fn build_in(
    inputs: &Inputs,
    log: &BuildLog,
    pristine: &Path,
    src: &Path,
    obj: &Path,
    art: &Path,
) -> anyhow::Result<()> {
    let (patches, fragments) = snapshot(inputs, art)?;
    say(
        "Copying",
        &format!("{} to {}", pristine.display(), src.display()),
    );
    log.run(Command::new("cp").arg("-al").arg(pristine).arg(src))?;
    fs::create_dir_all(obj).with_context(|| format!("creating {}", obj.display()))?;
    for patch in &patches {
        say("Patching", &file_name(patch));
        log.run(
            Command::new("patch")
                .args([
                    "-p1",
                    "--forward",
                    "--batch",
                    "--no-backup-if-mismatch",
                    "-d",
                ])
                .arg(src)
                .arg("-i")
                .arg(patch),
        )?;
    }
    configure(&fragments, log, src, obj)?;
    say("Compiling", "bzImage (see build.log)");
    log.run(make(src, obj).arg("bzImage"))?;
    say("Installing", "kernel headers");
    log.run(
        make(src, obj)
            .arg("headers_install")
            .arg(format!("INSTALL_HDR_PATH={}", art.join("hdrs").display())),
    )?;
    copy_artefacts(obj, art)?;
    build_kselftest(log, src, art)
}

fn configure(fragments: &[PathBuf], log: &BuildLog, src: &Path, obj: &Path) -> anyhow::Result<()> {
    say("Configuring", "tinyconfig + fragments");
    log.run(make(src, obj).arg("tinyconfig"))?;
    log.run(
        Command::new("scripts/kconfig/merge_config.sh")
            .current_dir(src)
            .args(["-m", "-O"])
            .arg(obj)
            .arg(obj.join(".config"))
            .args(fragments),
    )?;
    log.run(make(src, obj).arg("olddefconfig"))?;
    let config = fs::read_to_string(obj.join(".config")).context("reading .config")?;
    let mut missing = Vec::new();
    for frag in fragments {
        let text =
            fs::read_to_string(frag).with_context(|| format!("reading {}", frag.display()))?;
        missing.extend(missing_options(&text, &config));
    }
    if !missing.is_empty() {
        bail!(
            "these fragment options are not =y in the final .config (unknown symbol, or \
             unmet dependency): {}",
            missing.join(" ")
        );
    }
    Ok(())
}

/// The `CONFIG_X=y` lines of `fragment` that are not `=y` in `config`.
fn missing_options(fragment: &str, config: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    fragment
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_") && l.ends_with("=y"))
        .filter(|l| !have.contains(l))
        .map(|l| l.trim_end_matches("=y").to_owned())
        .collect()
}

fn make(src: &Path, obj: &Path) -> Command {
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut cmd = Command::new("nice");
    cmd.arg("make")
        .arg("-C")
        .arg(src)
        .arg(format!("O={}", obj.display()))
        .arg(format!("-j{jobs}"));
    cmd
}

fn copy_artefacts(obj: &Path, art: &Path) -> anyhow::Result<()> {
    for (from, to) in [
        ("arch/x86/boot/bzImage", "bzImage"),
        ("vmlinux", "vmlinux"),
        ("System.map", "System.map"),
        (".config", "config"),
    ] {
        fs::copy(obj.join(from), art.join(to))
            .with_context(|| format!("copying {from} to {}", art.display()))?;
    }
    Ok(())
}

fn build_kselftest(log: &BuildLog, src: &Path, art: &Path) -> anyhow::Result<()> {
    let source = src.join(KSELFTEST);
    if !source.is_file() {
        log.note(&format!(
            "no {KSELFTEST} in the patched tree; skipping the kselftest"
        ));
        return Ok(());
    }
    say("Compiling", "tamalloc_test (kselftest, static)");
    log.run(
        Command::new("gcc")
            .args(["-static", "-O2", "-Wall"])
            .arg("-I")
            .arg(src.join("tools/testing/selftests"))
            .arg("-I")
            .arg(art.join("hdrs/include"))
            .arg("-o")
            .arg(art.join("tamalloc_test"))
            .arg(&source),
    )
}

/// The extracted pristine tree for this tarball, extracting it on first use.
fn pristine_tree(inputs: &Inputs, root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("src").join(&inputs.tarball_key);
    if !dir.join(".extracted").is_file() {
        extract(&inputs.tarball, &dir)?;
    }
    single_subdir(&dir)
}

fn extract(tarball: &Path, dir: &Path) -> anyhow::Result<()> {
    say("Extracting", &tarball.display().to_string());
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    util::run(
        Command::new("tar")
            .arg("-xf")
            .arg(tarball)
            .arg("-C")
            .arg(dir),
    )?;
    File::create(dir.join(".extracted")).context("marking the extraction complete")?;
    Ok(())
}

fn single_subdir(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut subdirs = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            subdirs.push(entry.path());
        }
    }
    match subdirs.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected exactly one directory in {}", dir.display()),
    }
}

/// `build.log`: every command and its output.
struct BuildLog {
    path: PathBuf,
    file: File,
}

impl BuildLog {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    fn note(&self, line: &str) {
        // The log is best effort; a failed write shows up as a missing line only.
        let _ = writeln!(&self.file, "## {line}");
    }

    /// Runs `cmd` with its output in the log. It gets its own process group, killed as a
    /// whole when we are interrupted, so no orphaned `make -j` keeps writing here.
    fn run(&self, cmd: &mut Command) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt as _;
        self.note(&format!("{cmd:?}"));
        let out = self.file.try_clone().context("duplicating the log")?;
        let err = self.file.try_clone().context("duplicating the log")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let interrupted = util::interrupt_flag()?;
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {cmd:?}"))?;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for the build")? {
                break status;
            }
            if interrupted.load(std::sync::atomic::Ordering::Relaxed) {
                kill_group(&mut child);
                bail!("{}", util::interrupted_by());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        if !status.success() {
            bail!("{cmd:?} failed: {status}");
        }
        Ok(())
    }

    fn print_tail(&self, n: usize) {
        let Ok(file) = File::open(&self.path) else {
            return;
        };
        let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        eprintln!("--- last {n} lines of {} ---", self.path.display());
        for line in &lines[lines.len().saturating_sub(n)..] {
            eprintln!("{line}");
        }
    }
}

/// Kills the process group led by `child` and reaps `child`.
fn kill_group(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; `child` is unreaped, so its
        // pid (and the group it leads) cannot have been recycled.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.wait();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(items: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        items
            .iter()
            .map(|(n, d)| ((*n).to_owned(), d.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = hash_inputs("v1", &parts(&[("series", "0001-a.patch\n"), ("x", "abc")]));
        assert_eq!(
            a,
            hash_inputs("v1", &parts(&[("series", "0001-a.patch\n"), ("x", "abc")]))
        );
        assert_eq!(a.len(), 16);
        assert_ne!(
            a,
            hash_inputs("v2", &parts(&[("series", "0001-a.patch\n"), ("x", "abc")]))
        );
        assert_ne!(
            a,
            hash_inputs("v1", &parts(&[("series", "0001-a.patch\n"), ("x", "abd")]))
        );
        // Moving a byte from one part to the next must change the hash.
        assert_ne!(
            hash_inputs("v1", &parts(&[("a", "xy"), ("b", "z")])),
            hash_inputs("v1", &parts(&[("a", "x"), ("b", "yz")]))
        );
    }

    #[test]
    fn series_parsing() {
        let text = "# comment\n0001-a.patch\n\n  0002-b.patch -p1\n0003-c.patch # why\n";
        assert_eq!(
            parse_series(text),
            ["0001-a.patch", "0002-b.patch", "0003-c.patch"]
        );
        assert!(parse_series("").is_empty());
    }

    #[test]
    fn missing_options_are_listed() {
        let frag = "# x\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_N=2\n# CONFIG_C is not set\n";
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_N=4\n";
        assert_eq!(missing_options(frag, config), ["CONFIG_B"]);
    }

    #[test]
    fn gather_keys_on_debug_and_patches() {
        let dir = std::env::temp_dir().join(format!("xtask-kernel-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("tamalloc.config"), "CONFIG_A=y\n").unwrap();
        fs::write(dir.join("debug.config"), "CONFIG_B=y\n").unwrap();
        let tarball = dir.join("linux.tar.xz");
        fs::write(&tarball, "not really").unwrap();
        let plain = Inputs::gather(&dir, &tarball, false).unwrap();
        let debug = Inputs::gather(&dir, &tarball, true).unwrap();
        assert_ne!(plain.hash, debug.hash);
        assert!(plain.patches.is_empty());
        fs::write(dir.join("series"), "0001-x.patch\n").unwrap();
        assert!(Inputs::gather(&dir, &tarball, false).is_err());
        fs::write(dir.join("0001-x.patch"), "diff").unwrap();
        let patched = Inputs::gather(&dir, &tarball, false).unwrap();
        assert_ne!(plain.hash, patched.hash);
        assert_eq!(
            patched.patches,
            [("0001-x.patch".to_owned(), b"diff".to_vec())]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
