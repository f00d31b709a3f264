//! The rigs' tests use the product's test helpers (tests/common of tamalloc-user, whose
//! `bin()` builds the product's `tamalloc` binary for them) and the rig binary.

#[path = "../../../tamalloc-user/tests/common/mod.rs"]
mod product;

pub use product::*;

/// The rig binary, `tamalloc-bench`, that the traced workloads run.
pub fn rig() -> &'static str {
    env!("CARGO_BIN_EXE_tamalloc-bench")
}

/// `tamalloc trace ARGS -- tamalloc-bench workload --seed 7 --report REPORT`.
#[allow(dead_code, reason = "each test crate uses a subset of these helpers")]
pub fn trace_workload(args: &[&str], report: &str) -> std::process::Output {
    trace(
        args,
        &[rig(), "workload", "--seed", "7", "--report", report],
    )
}
