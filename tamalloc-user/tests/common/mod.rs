//! Helpers shared by the integration tests (each test crate uses its own subset).
#![allow(
    dead_code,
    reason = "each test crate compiles this module and uses a subset"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

/// The fault kinds, in the order of every output format.
pub const KINDS: [&str; 5] = ["read_zero", "write_zero", "cow_zero", "cow", "other"];

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tamalloc")
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
    let out = Command::new(bin())
        .arg("trace")
        .args(args)
        .arg("--")
        .args(command)
        .output()
        .expect("run tamalloc trace");
    assert!(
        out.status.success(),
        "tamalloc trace failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
