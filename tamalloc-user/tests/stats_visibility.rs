//! Whom an unprivileged user sees: syscall 555 reports another process only if the caller
//! may ptrace-read it (`PTRACE_MODE_READ_FSCREDS`, LSMs included), and the `/proc`
//! fallback shows the same, never more (kernel-patch/README.md, "Visibility").
//!
//! Runs `tamalloc` as `nobody` through `setpriv`, so it needs root (CI runs as root).

use std::{path::Path, process::Command};

use serde_json::Value;

mod common;

const NOBODY: u32 = 65534;

/// Runs the tamalloc binary as `nobody` (a copy in a directory anyone may enter: the
/// checkout may be under a private home).
fn as_nobody(tmp: &common::TempDir, args: &[&str]) -> std::process::Output {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs tamalloc as another user and needs root: run `sudo -E cargo test`"
    );
    let bin = tmp.path("tamalloc");
    if !bin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_tamalloc"), &bin).expect("copy the binary");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(tmp.dir(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the temp dir");
    }
    Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(&bin)
        .args(args)
        .output()
        .expect("running setpriv (util-linux)")
}

fn real_uid(pid: u64) -> Option<u32> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn unprivileged_stats_list_only_ptrace_readable_processes() {
    let tmp = common::TempDir::new("visibility");
    let o = as_nobody(&tmp, &["stats", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let mut seen_self = false;
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).expect("JSON line");
        let pid = v["pid"].as_u64().expect("pid");
        assert_ne!(pid, 1, "init is not nobody's to read: {line}");
        // Exited since: nothing to check.
        if let Some(uid) = real_uid(pid) {
            assert_eq!(uid, NOBODY, "only nobody's own processes: {line}");
        }
        seen_self |= v["comm"] == "tamalloc";
    }
    assert!(seen_self, "the caller sees itself: {out}");
}

#[test]
fn unprivileged_stats_of_init_is_eperm() {
    let tmp = common::TempDir::new("visibility-eperm");
    let o = as_nobody(&tmp, &["stats", "1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("tamalloc: ") && lines[0].ends_with("(EPERM)"),
        "{err}"
    );
}
