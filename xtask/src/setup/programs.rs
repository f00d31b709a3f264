//! Every program the project runs, and where it comes from on a fresh Debian 12 machine.
//!
//! A fresh machine of ours has rustup's Rust and little else; CI once passed only because its
//! machine had `rsync` installed by hand. So each program xtask, the tests, the benchmarks or
//! the kernel build runs is listed here with the package that provides it, the guard test
//! below fails when source code runs a program missing from this table or when a package the
//! table names is not in [`super::PACKAGES`], and `cargo xtask setup` checks after
//! installing that every program resolves on `PATH`.

/// Where a program comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A package `cargo xtask setup` installs (it must be in [`super::PACKAGES`]).
    Setup(&'static str),
    /// A package of Debian's minimal base (`Essential: yes` or `Priority: required`): on
    /// every Debian 12 system, including a `debootstrap --variant=minbase` root.
    Base(&'static str),
    /// The Rust toolchain the machine comes with (rustup's).
    Rustup,
    /// What else a fresh machine of ours comes with: Node.js with npm, CPython with pip
    /// (set-up installs Debian's where they are missing: `super::MACHINE_FALLBACKS`).
    Machine,
    /// Built by `cargo xtask setup` itself (`cargo install`).
    Built,
    /// Run only when not root, to become root; root runs it never.
    NonRootOnly(&'static str),
}

/// A program the project runs, its source, and who runs it.
pub struct Program {
    pub name: &'static str,
    pub from: Source,
    pub why: &'static str,
}

const fn p(name: &'static str, from: Source, why: &'static str) -> Program {
    Program { name, from, why }
}

use Source::{Base, Built, Machine, NonRootOnly, Rustup, Setup};

pub const PROGRAMS: &[Program] = &[
    // The toolchain and set-up itself.
    p("cargo", Rustup, "every build"),
    p("rustup", Rustup, "choosing the BPF toolchain"),
    p("apt-get", Base("apt"), "set-up installs packages"),
    p(
        "dpkg-query",
        Base("dpkg"),
        "set-up checks what is installed",
    ),
    p("bpf-linker", Built, "links the eBPF object"),
    p("cc", Setup("gcc"), "links Rust binaries; the C API example"),
    p("gcc", Setup("gcc"), "the C API example in the guest"),
    p("mount", Base("mount"), "mounting tracefs"),
    p("sudo", NonRootOnly("sudo"), "`cargo xtask demo` as a user"),
    // The kernel build (xtask/src/kernel.rs): what `make tinyconfig bzImage headers_install`
    // and the steps around it run (Documentation/process/changes.rst, and what failed on a
    // fresh machine).
    p("tar", Base("tar"), "unpacking linux-source"),
    p("xz", Setup("xz-utils"), "unpacking linux-source"),
    p(
        "cp",
        Base("coreutils"),
        "a hard-linked copy of the pristine tree",
    ),
    p("patch", Setup("patch"), "applying the series"),
    p("nice", Base("coreutils"), "the kernel build runs niced"),
    p("make", Setup("make"), "kernel build"),
    p("flex", Setup("flex"), "kernel build (kconfig, dtc)"),
    p("bison", Setup("bison"), "kernel build (kconfig)"),
    p("bc", Setup("bc"), "kernel build (timeconst)"),
    p("perl", Setup("perl"), "kernel build scripts"),
    p("pahole", Setup("dwarves"), "kernel build (BTF)"),
    p("rsync", Setup("rsync"), "kernel build (headers_install)"),
    p("awk", Base("mawk"), "kernel build scripts"),
    p("sed", Base("sed"), "kernel build scripts"),
    p(
        "cpio",
        Setup("cpio"),
        "kernel build (kheaders) and the initramfs",
    ),
    // Booting it.
    p(
        "qemu-system-x86_64",
        Setup("qemu-system-x86"),
        "booting the patched kernel",
    ),
    p("busybox", Setup("busybox-static"), "the guest's userland"),
    p("ldd", Base("libc-bin"), "finding guest binaries' libraries"),
    // Tests and benchmarks on the host.
    p("sh", Base("dash"), "tests trace `sh -c` scripts"),
    p(
        "unshare",
        Base("util-linux"),
        "pid-namespace and user-namespace tests",
    ),
    p("setpriv", Base("util-linux"), "the not-root tests"),
    p("date", Base("coreutils"), "benchmark timestamps"),
    p(
        "groff",
        Setup("groff-base"),
        "the man pages' lint test (`groff -man -ww -z`)",
    ),
    p(
        "bpftrace",
        Setup("bpftrace"),
        "the peer tracer in the benchmarks",
    ),
    p(
        "prometheus",
        Setup("prometheus"),
        "scrapes `trace --prometheus` in its test",
    ),
    p(
        "tmux",
        Setup("tmux"),
        "runs the live view in a terminal in its test",
    ),
    p(
        "debootstrap",
        Setup("debootstrap"),
        "`cargo xtask rehearse` builds a fresh root",
    ),
    p(
        "pivot_root",
        Base("util-linux"),
        "`cargo xtask rehearse` enters the fresh root",
    ),
    p("umount", Base("mount"), "`cargo xtask rehearse` cleans up"),
    p(
        "git",
        Setup("git"),
        "`cargo xtask rehearse` clones the repository",
    ),
    // The Perfetto UI test and its set-up (setup/perfetto_ui.rs).
    p(
        "python3",
        Machine,
        "`pip download` of the wheel that bundles the Perfetto UI",
    ),
    p("unzip", Setup("unzip"), "unpacking the UI from the wheel"),
    p("npm", Machine, "installing puppeteer-core (`npm ci`)"),
    p("node", Machine, "runs tests/perfetto-ui/load-trace.mjs"),
    p(
        "chromium",
        Setup("chromium"),
        "the browser puppeteer-core drives (headless)",
    ),
    // The pprof test (tamalloc-user/tests/pprof_go.rs).
    p(
        "go",
        Setup("golang-go"),
        "`go tool pprof -raw`/`-top` read `--pprof` profiles back",
    ),
];

/// Programs of the table that `PATH` does not resolve (root never needs the
/// [`Source::NonRootOnly`] ones).
pub fn missing_on_path() -> Vec<&'static Program> {
    PROGRAMS
        .iter()
        .filter(|p| !matches!(p.from, NonRootOnly(_)))
        .filter(|p| which::which(p.name).is_err())
        .collect()
}

#[cfg(test)]
mod tests {
    //! The guard: nothing the project runs may be missing from set-up.

    use std::{collections::BTreeSet, fs, path::Path};

    use super::*;

    fn find(name: &str) -> Option<&'static Program> {
        PROGRAMS.iter().find(|p| p.name == name)
    }

    /// Program names that source code runs: `Command::new("X")`, `which::which("X")`,
    /// `const NAME: &str = "/usr/bin/X"`, and `"sh", "-c"` argument lists handed to a
    /// command runner. Paths keep their file name only.
    fn spawned_in(text: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for pat in [
            "Command::new(\"",
            "which::which(\"",
            ": &str = \"/usr/bin/",
            ": &str = \"/bin/",
        ] {
            for (i, _) in text.match_indices(pat) {
                let rest = &text[i + pat.len()..];
                let Some(end) = rest.find('"') else { continue };
                let word = &rest[..end];
                let name = word.rsplit('/').next().unwrap_or(word);
                // `Command::new("scripts/kconfig/merge_config.sh")` runs a file of the
                // kernel tree, not an installed program.
                if !word.starts_with("scripts/") && !name.is_empty() {
                    found.insert(name.to_owned());
                }
            }
        }
        if text.contains("\"sh\", \"-c\"") {
            found.insert("sh".to_owned());
        }
        found
    }

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            if path.is_dir() {
                if name != "target" && name != ".git" {
                    rust_files(&path, out);
                }
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_spawned_program_is_in_the_table() {
        let root = crate::util::workspace_root();
        let mut files = Vec::new();
        rust_files(&root, &mut files);
        assert!(
            files.len() > 20,
            "found only {} source files under {}",
            files.len(),
            root.display()
        );
        let mut missing = Vec::new();
        for f in &files {
            let text = fs::read_to_string(f).unwrap_or_default();
            // This file names programs in its own patterns and test data.
            if f.ends_with("xtask/src/setup/programs.rs") {
                continue;
            }
            for name in spawned_in(&text) {
                if find(&name).is_none() {
                    missing.push(format!(
                        "{name} (run by {})",
                        f.strip_prefix(&root).unwrap_or(f).display()
                    ));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "programs run by the project but not in xtask/src/setup/programs.rs (add each with \
             the package that provides it, and that package to setup's PACKAGES): {missing:?}"
        );
    }

    #[test]
    fn every_package_the_table_names_is_installed_by_setup() {
        let installed: BTreeSet<&str> = super::super::PACKAGES.iter().map(|(p, _)| *p).collect();
        let uncovered: Vec<String> = PROGRAMS
            .iter()
            .filter_map(|p| match p.from {
                Setup(pkg) if !installed.contains(pkg) => Some(format!(
                    "{} ({}) comes from package {pkg}, which `cargo xtask setup` does not install",
                    p.name, p.why
                )),
                _ => None,
            })
            .collect();
        assert!(uncovered.is_empty(), "{}", uncovered.join("; "));
    }

    #[test]
    fn the_scanner_sees_each_way_of_running_a_program() {
        let text = r#"
            Command::new("qemu-system-x86_64"); which::which("bpftrace");
            const PROMETHEUS: &str = "/usr/bin/prometheus";
            trace(&[], &["sh", "-c", "true"]);
            Command::new("scripts/kconfig/merge_config.sh");
            Command::new(bin);
        "#;
        let got: Vec<String> = spawned_in(text).into_iter().collect();
        assert_eq!(got, ["bpftrace", "prometheus", "qemu-system-x86_64", "sh"]);
    }
}
