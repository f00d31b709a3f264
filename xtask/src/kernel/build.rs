//! One kernel build, logged to `build.log`: copy the pristine tree, patch, configure
//! (tinyconfig + fragments, checked), compile, install the headers, build the kselftest.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use super::inputs::{Inputs, file_name};
use crate::util::{self, say};

const KSELFTEST: &str = "tools/testing/selftests/tamalloc/tamalloc_test.c";

/// Builds into `art` (removing an incomplete one first), marking it complete with `ok`.
pub fn build(inputs: &Inputs, root: &Path, art: &Path) -> anyhow::Result<()> {
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

/// Writes the inputs to `<art>/inputs/` and returns the paths of the patches and fragments.
fn snapshot(inputs: &Inputs, art: &Path) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let dir = art.join("inputs");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |files: &[(String, Vec<u8>)]| -> anyhow::Result<Vec<PathBuf>> {
        files
            .iter()
            .map(|(name, data)| {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
                Ok(path)
            })
            .collect()
    };
    Ok((write(&inputs.patches)?, write(&inputs.fragments)?))
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
    let texts = fragments
        .iter()
        .map(|f| fs::read_to_string(f).with_context(|| format!("reading {}", f.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let missing = missing_options(&texts, &config);
    if !missing.is_empty() {
        bail!(
            "these fragment options do not have their fragment's value in the final .config \
             (unknown symbol, or unmet dependency): {}",
            missing.join(" ")
        );
    }
    Ok(())
}

/// The settings of the fragments, merged in order as merge_config.sh merges them (a later
/// `CONFIG_X=v` or `# CONFIG_X is not set` replaces an earlier one), that `config` does not
/// have: a `CONFIG_X=v` line missing from it, or a `# CONFIG_X is not set` that it sets.
fn missing_options(fragments: &[String], config: &str) -> Vec<String> {
    let mut want: Vec<(&str, Option<&str>)> = Vec::new();
    for line in fragments.iter().flat_map(|f| f.lines()).map(str::trim) {
        let setting =
            if let Some((sym, _)) = line.split_once('=').filter(|_| line.starts_with("CONFIG_")) {
                (sym, Some(line))
            } else if let Some(sym) = line
                .strip_prefix("# ")
                .and_then(|l| l.strip_suffix(" is not set"))
                .filter(|s| s.starts_with("CONFIG_"))
            {
                (sym, None)
            } else {
                continue;
            };
        want.retain(|(sym, _)| *sym != setting.0);
        want.push(setting);
    }
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    let is_set = |sym: &str| {
        have.iter()
            .any(|l| l.strip_prefix(sym).is_some_and(|v| v.starts_with('=')))
    };
    want.into_iter()
        .filter_map(|(sym, line)| match line {
            Some(line) if !have.contains(line) => Some(line.to_owned()),
            None if is_set(sym) => Some(format!("# {sym} is not set")),
            _ => None,
        })
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
pub(super) fn is_extracted(inputs: &Inputs, root: &Path) -> bool {
    root.join("src")
        .join(&inputs.tarball_key)
        .join(".extracted")
        .is_file()
}

pub(super) fn pristine_tree(inputs: &Inputs, root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("src").join(&inputs.tarball_key);
    if !is_extracted(inputs, root) {
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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_options_are_listed() {
        let frag = "# x\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_N=2\n# CONFIG_C is not set\n\
                    # CONFIG_D is not set\n";
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_N=4\nCONFIG_CC=y\nCONFIG_D=y\n";
        assert_eq!(
            missing_options(&[frag.to_owned()], config),
            ["CONFIG_B=y", "CONFIG_N=2", "# CONFIG_D is not set"]
        );
        // A later fragment's setting replaces an earlier one's.
        let own = "# CONFIG_B is not set\nCONFIG_N=4\nCONFIG_D=y\n".to_owned();
        assert!(missing_options(&[frag.to_owned(), own], config).is_empty());
    }
}
