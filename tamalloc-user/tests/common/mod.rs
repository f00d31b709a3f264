//! Helpers shared by the integration tests (each test crate uses its own subset), tamalloc-user's
//! and tamalloc-bench's (whose tests/common includes this file).
#![allow(
    dead_code,
    reason = "each test crate compiles this module and uses a subset"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use serde_json::Value;

/// The fault kinds, in the order of every output format.
pub const KINDS: [&str; 5] = ["read_zero", "write_zero", "cow_zero", "cow", "other"];

/// The product's `tamalloc` binary: cargo's own for tamalloc-user's tests, the one in the
/// same target dir for another package's (built first, so never missing or stale).
pub fn bin() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    option_env!("CARGO_BIN_EXE_tamalloc").unwrap_or_else(|| BUILT.get_or_init(build_product))
}

/// `cargo build -p tamalloc-user --bin tamalloc` into this test's target dir and profile
/// (target/<profile>/deps/<test> is where cargo runs a test from).
fn build_product() -> String {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target/ above the profile");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "--package",
        "tamalloc-user",
        "--bin",
        "tamalloc",
    ])
    .arg("--target-dir")
    .arg(target_dir);
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build -p tamalloc-user");
    assert!(
        status.success(),
        "cargo build -p tamalloc-user --bin tamalloc failed"
    );
    let bin = profile_dir.join("tamalloc");
    assert!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    bin.to_str().expect("utf-8 target path").to_owned()
}

/// Tracing loads eBPF programs: a test that does says so instead of passing silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF programs and needs root: run `sudo -E cargo test`"
    );
}

/// A directory removed when the test ends, however it ends.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tamalloc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }

    pub fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }

    pub fn arg(&self, f: &str) -> String {
        self.path(f).to_str().expect("utf-8 temp path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn json_lines(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

pub fn by_type<'a>(records: &'a [Value], ty: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == ty).collect()
}

/// `tamalloc trace ARGS -- COMMAND`, which must succeed.
pub fn trace(args: &[&str], command: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("trace").args(args).arg("--").args(command);
    succeeds(cmd, "tamalloc trace")
}

/// Runs `cmd` (`what`, in messages), which must succeed; its output.
pub fn succeeds(mut cmd: Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads `child`'s stdout on a thread until a line containing `needle` arrives (true), or
/// `timeout` passes or the output ends first (false).
#[allow(dead_code, reason = "each test crate uses a subset of these helpers")]
pub fn wait_for_line(
    child: &mut std::process::Child,
    needle: &str,
    timeout: std::time::Duration,
) -> bool {
    use std::io::BufRead as _;
    let Some(stdout) = child.stdout.take() else {
        return false;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}
