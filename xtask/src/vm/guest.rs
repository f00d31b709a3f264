//! What the guest gets from the workspace: the project's binaries, the C example, and the
//! `/cmd` script that runs a command line.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::util;

/// A `/cmd` script running `argv` with each word single-quoted.
pub fn command_script(argv: &[String]) -> String {
    let words: Vec<String> = argv.iter().map(|w| shell_quote(w)).collect();
    format!("{}\n", words.join(" "))
}

pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The project's binaries for the guest: `tamalloc` and `tamalloc-bench` (built here, each
/// if it builds), the C example, the man pages' EXAMPLES programs and the kselftest from the
/// kernel build (if the series has it). `TAMALLOC_VM_NO_USER=1` skips building and adding the first three.
pub fn guest_binaries(kernel: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    if std::env::var_os("TAMALLOC_VM_NO_USER").is_some() {
        eprintln!(
            "warning: TAMALLOC_VM_NO_USER is set: no /usr/bin/tamalloc or \
             /usr/bin/tamalloc-bench in the guest"
        );
    } else {
        match build_release("tamalloc-user", "tamalloc") {
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
        match build_release("tamalloc-bench", "tamalloc-bench") {
            Ok(bin) => files.push((bin, "/usr/bin/tamalloc-bench".to_owned())),
            Err(e) => eprintln!("warning: continuing without /usr/bin/tamalloc-bench: {e:#}"),
        }
    }
    // The man pages' EXAMPLES, against the patched kernel's headers (its `__NR_` numbers).
    let examples = util::target_dir().join("manpage-examples");
    match crate::manpages::build_examples(&kernel.join("hdrs/include"), &examples) {
        Ok(built) => files.extend(built),
        Err(e) => eprintln!("warning: continuing without the man pages' examples: {e:#}"),
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

/// `cargo build --release -p PACKAGE` and the path of its binary `bin`; on failure, the
/// last lines of cargo's errors.
fn build_release(package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let build = format!("cargo build --release -p {package}");
    util::say("Building", &format!("{bin} ({build})"));
    let out = util::cargo()
        .args(["build", "--release", "--quiet", "-p", package])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {build}"))?;
    if !out.status.success() {
        bail!(
            "{build} failed:\n{}",
            util::last_lines(&String::from_utf8_lossy(&out.stderr), 8)
        );
    }
    let path = util::target_dir().join("release").join(bin);
    if !path.is_file() {
        bail!("{} is missing after the build", path.display());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted() {
        let argv: Vec<String> = ["sh", "-c", "exit 7", "it's"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(command_script(&argv), "'sh' '-c' 'exit 7' 'it'\\''s'\n");
    }
}
