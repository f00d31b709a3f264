//! `tamalloc trace`'s errors, on the host kernel: each is one line a user can act on.
//!
//! This test loads eBPF programs, so it needs root (CI runs as root); without it it fails
//! with that message rather than passing silently.

use std::process::Command;

mod common;

use common::{TempDir, bin, require_root};

fn trace_error(envs: &[(&str, &str)], args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("trace")
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("run tamalloc trace");
    assert!(!out.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one clear line, got:\n{err}"
    );
    err
}

#[test]
fn trace_errors_are_one_clear_line() {
    require_root();
    // Not root: drop to nobody.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .args([bin(), "trace", "--duration", "1s"])
        .output()
        .expect("run setpriv");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");

    // BPF refused by the kernel: in a user namespace the mapped root passes our capability
    // check, but the kernel refuses bpf() outside the initial namespace.
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            bin(),
            "trace",
            "--duration",
            "1s",
        ])
        .output()
        .expect("run unshare");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one clear line, got:\n{err}"
    );
    assert!(err.contains("the kernel refused the eBPF object"), "{err}");

    let dir = TempDir::new("errors");
    // tracefs missing where it is expected (and not mountable there).
    let missing = dir.path("no-such-dir");
    let err = trace_error(
        &[("TAMALLOC_TRACEFS", missing.to_str().expect("utf-8"))],
        &["-d", "1s"],
    );
    assert!(err.contains("tracefs is not mounted"), "{err}");
    // A tracefs without the tracepoints we need.
    std::fs::create_dir_all(dir.path("fake/events")).expect("mkdir");
    let err = trace_error(
        &[(
            "TAMALLOC_TRACEFS",
            dir.path("fake").to_str().expect("utf-8"),
        )],
        &["-d", "1s"],
    );
    assert!(
        err.contains("tracepoint raw_syscalls:sys_enter is not available"),
        "{err}"
    );
    // An output file that cannot be written.
    let err = trace_error(&[], &["-d", "1s", "--output", "/proc/version/trace.jsonl"]);
    assert!(
        err.contains("cannot write the trace to /proc/version/trace.jsonl"),
        "{err}"
    );
    // A pid that does not exist.
    let err = trace_error(&[], &["-p", "999999999"]);
    assert!(err.contains("process 999999999 not found"), "{err}");
    // Bad values are refused by the parser.
    let err = trace_error(&[], &["--ring-size", "3000"]);
    assert!(err.contains("power of two"), "{err}");
}

/// `kernel.perf_event_max_stack`, set back to what it was however the test ends.
struct MaxStack(String);

const MAX_STACK: &str = "/proc/sys/kernel/perf_event_max_stack";

impl MaxStack {
    fn set(value: &str) -> Self {
        let old = std::fs::read_to_string(MAX_STACK).expect("read perf_event_max_stack");
        std::fs::write(MAX_STACK, value).expect("write perf_event_max_stack");
        Self(old)
    }
}

impl Drop for MaxStack {
    fn drop(&mut self) {
        let _ = std::fs::write(MAX_STACK, self.0.trim());
    }
}

#[test]
fn a_lowered_stack_depth_limit_is_one_clear_line() {
    require_root();
    // The kernel refuses stack maps deeper than this limit, with or without --stacks.
    let _limit = MaxStack::set("64");
    for args in [&["-d", "1s"][..], &["-d", "1s", "--stacks"]] {
        let err = trace_error(&[], args);
        assert!(
            err.contains("kernel.perf_event_max_stack is 64")
                && err.contains("sysctl -w kernel.perf_event_max_stack=127"),
            "{err}"
        );
    }
}
