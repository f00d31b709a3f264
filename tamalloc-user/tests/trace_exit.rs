//! `tamalloc trace -- CMD` exits as CMD did (as `strace`, `perf stat` and `time` do), and
//! refuses a CMD that cannot run before it loads anything.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{bin, require_root};

/// `tamalloc trace --quiet -- CMD`'s exit code and stderr.
fn trace(command: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args(["trace", "--quiet", "--"])
        .args(command)
        .output()
        .expect("run tamalloc trace");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exits_with_the_commands_status() {
    require_root();
    assert_eq!(trace(&["true"]).0, Some(0));
    assert_eq!(trace(&["false"]).0, Some(1));
    assert_eq!(trace(&["sh", "-c", "exit 7"]).0, Some(7));
}

#[test]
fn a_command_killed_by_a_signal_gives_128_plus_its_number() {
    require_root();
    assert_eq!(trace(&["sh", "-c", "kill -TERM $$"]).0, Some(128 + 15));
}

#[test]
fn a_trace_that_ends_first_exits_0() {
    require_root();
    let out = Command::new(bin())
        .args([
            "trace",
            "--quiet",
            "--duration",
            "500ms",
            "--",
            "sleep",
            "30",
        ])
        .output()
        .expect("run tamalloc trace");
    assert_eq!(
        out.status.code(),
        Some(0),
        "the command was killed, the trace ended normally"
    );
}

/// No root needed: the command is checked first. Proof that nothing was loaded or attached:
/// tracefs is pointed at a directory that does not exist, so the tracer, had it got that
/// far, would have failed on it (or, without root, on the privilege check) with another
/// message; and the answer comes at once.
#[test]
fn a_command_that_cannot_run_fails_first_with_127_or_126() {
    for (command, status, reason) in [
        ("/nonexistent", 127, "No such file or directory"),
        ("tamalloc-no-such-command", 127, "No such file or directory"),
        ("/", 126, "Permission denied"),
    ] {
        let started = Instant::now();
        let out = Command::new(bin())
            .args(["trace", "--quiet", "--", command])
            .env("TAMALLOC_TRACEFS", "/nonexistent-tracefs")
            .output()
            .expect("run tamalloc trace");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{command}: {err}");
        assert_eq!(
            err,
            format!("tamalloc: cannot run `{command}`: {reason}\n"),
            "one line, and nothing attached"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{command}: slow"
        );
        assert!(out.stdout.is_empty(), "{command}: no view was started");
    }
}
