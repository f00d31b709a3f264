//! The kernel tests under QEMU, for `cargo xtask test`: one boot that runs the kselftest
//! (`/usr/bin/tamalloc_test`), every `tests/vm/*.sh` of the workspace, and then checks the
//! kernel log for BUG/WARNING/lockdep/KASAN/Call Trace lines. See `tests/vm/README.md`.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    guest::guest_binaries,
    initramfs::Initramfs,
    qemu::{self, BootOptions},
};
use crate::{kernel, util};

/// The whole boot; a debug kernel under TCG is slow.
const BOOT_TIMEOUT: Duration = Duration::from_secs(1800);
/// One test inside the guest.
const TEST_TIMEOUT_SECS: u32 = 600;
const KSELFTEST: &str = "tamalloc_test";
const WARNINGS_TEST: &str = "kernel-warnings";

/// Boots the kernel once and runs every VM test; fails when one fails.
pub fn run(args: &kernel::Args) -> anyhow::Result<()> {
    let kernel = kernel::run(args)?;
    let scripts = test_scripts(&util::workspace_root().join("tests/vm"))?;
    let mut initramfs = Initramfs::new();
    for (host, guest) in guest_binaries(&kernel) {
        initramfs.file(host, guest);
    }
    let mut names = Vec::new();
    for script in &scripts {
        let name = script_name(script)?;
        initramfs.file(script, format!("/vmtests/{name}.sh"));
        names.push(name);
    }
    initramfs.command(guest_script(&names));
    let opts = BootOptions {
        mem_mib: 1024,
        timeout: Some(BOOT_TIMEOUT),
        echo: true,
    };
    let outcome = qemu::boot(&kernel, &initramfs, &opts)?;
    let mut expected = vec![KSELFTEST.to_owned()];
    expected.extend(names);
    let mut results = collect_results(&expected, &outcome.lines);
    let warnings_ok = outcome.warnings == Some(0);
    println!(
        "vmtest: {WARNINGS_TEST}: {}",
        if warnings_ok { "ok" } else { "FAILED" }
    );
    results.push((WARNINGS_TEST.to_owned(), warnings_ok));
    summarize(&describe(args), &results, &outcome.log)
}

fn summarize(what: &str, results: &[(String, bool)], log: &Path) -> anyhow::Result<()> {
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name.as_str())
        .collect();
    let passed = results.len() - failed.len();
    println!("vmtests: {passed} passed, {} failed ({what})", failed.len());
    if !failed.is_empty() {
        bail!(
            "VM tests failed: {} (console log: {})",
            failed.join(", "),
            log.display()
        );
    }
    Ok(())
}

/// "6.12" or "6.12 debug".
fn describe(args: &kernel::Args) -> String {
    let debug = if args.debug { " debug" } else { "" };
    format!("kernel {}{debug}", args.kernel)
}

/// `dir/*.sh`, sorted; none when the directory does not exist.
fn test_scripts(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut scripts = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "sh") && path.is_file() {
            scripts.push(path);
        }
    }
    scripts.sort();
    Ok(scripts)
}

/// The test name of a script: its file stem, limited to `[A-Za-z0-9_.-]`.
fn script_name(script: &Path) -> anyhow::Result<String> {
    let stem = script
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let valid = !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid || stem == KSELFTEST || stem == WARNINGS_TEST {
        bail!(
            "{}: test script names must be [A-Za-z0-9_.-]+ and not {KSELFTEST}/{WARNINGS_TEST}",
            script.display()
        );
    }
    Ok(stem)
}

/// The `/cmd` that runs the kselftest and each `/vmtests/NAME.sh`, printing
/// `vmtest: NAME: ok|FAILED`, and exits non-zero when one failed.
fn guest_script(names: &[String]) -> String {
    let mut s = format!(
        r#"failed=0
t() {{
	name=$1
	shift
	echo "vmtest: $name: running"
	cd /tmp
	start=$(date +%s)
	if timeout {TEST_TIMEOUT_SECS} "$@"; then
		status=ok
	else
		status="FAILED (exit $?)"
		failed=$((failed + 1))
	fi
	# Where a suite's time goes (the debug kernels' share of CI), before its result.
	echo "vmtest: $name: took $(($(date +%s) - start)) s"
	echo "vmtest: $name: $status"
	cd /
}}
if [ -x /usr/bin/{KSELFTEST} ]; then
	t {KSELFTEST} /usr/bin/{KSELFTEST}
else
	echo "vmtest: {KSELFTEST}: FAILED (not in this kernel build)"
	failed=$((failed + 1))
fi
"#
    );
    for name in names {
        s.push_str(&format!("t {name} sh /vmtests/{name}.sh\n"));
    }
    s.push_str("[ \"$failed\" -eq 0 ]\n");
    s
}

/// (name, passed) for each expected test, from its `vmtest: NAME: ok|FAILED` line; a test
/// without a result line (the guest died first) failed.
fn collect_results(expected: &[String], lines: &[String]) -> Vec<(String, bool)> {
    expected
        .iter()
        .map(|name| {
            let ok_line = format!("vmtest: {name}: ok");
            let failed_prefix = format!("vmtest: {name}: FAILED");
            let mut ok = false;
            for line in lines.iter().map(|l| l.trim()) {
                if line == ok_line {
                    ok = true;
                } else if line.starts_with(&failed_prefix) {
                    ok = false;
                    break;
                }
            }
            (name.clone(), ok)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn results_are_collected() {
        let lines = strings(&[
            "vmtest: tamalloc_test: running",
            "vmtest: tamalloc_test: ok",
            "vmtest: smoke: running",
            "vmtest: smoke: FAILED (exit 1)",
            "vmtest: lazy: running",
        ]);
        let expected = strings(&["tamalloc_test", "smoke", "lazy"]);
        assert_eq!(
            collect_results(&expected, &lines),
            [
                ("tamalloc_test".to_owned(), true),
                ("smoke".to_owned(), false),
                ("lazy".to_owned(), false),
            ]
        );
    }

    #[test]
    fn script_names_are_checked() {
        assert_eq!(script_name(Path::new("/x/smoke.sh")).unwrap(), "smoke");
        assert!(script_name(Path::new("/x/bad name.sh")).is_err());
        assert!(script_name(Path::new("/x/tamalloc_test.sh")).is_err());
    }

    #[test]
    fn guest_script_runs_every_test() {
        let s = guest_script(&strings(&["a", "b-c"]));
        assert!(s.contains("t tamalloc_test /usr/bin/tamalloc_test\n"));
        assert!(s.contains("t a sh /vmtests/a.sh\n"));
        assert!(s.contains("t b-c sh /vmtests/b-c.sh\n"));
    }

    #[test]
    fn summary_fails_on_failures() {
        let log = Path::new("/dev/null");
        assert!(summarize("k", &[("a".to_owned(), true)], log).is_ok());
        assert!(summarize("k", &[("a".to_owned(), true), ("b".to_owned(), false)], log).is_err());
    }
}
