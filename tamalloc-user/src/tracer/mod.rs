//! The first-touch fault tracer, in the order data flows through it:
//!
//! ```text
//! ① kernel event      tracepoints run tamalloc-ebpf's programs (raw_syscalls, sched,
//!                      exceptions:page_fault_*)
//! ② map / ring        they keep regions and per-process counters in maps, and stream
//!                      events through a ring buffer; probe loads, attaches and reads them
//! ③ decode            ring bytes -> TraceEvent
//! ④ aggregate         events + counter snapshots -> per-process state; stacks: the
//!                      kernel's stack counts (`--stacks`) -> symbolized `stack` records
//!    session          drives ①–④ for one trace: the followed command (command), timing,
//!                      signals, the final drain; it builds the records (record), whose
//!                      binary form, with events as their ring bytes, is in recording
//! ⑤ Sink / View       what the session hands records and snapshots to (sink): defined
//!                      here, implemented in `crate::output`, which this module never uses
//! ```

pub mod aggregate;
pub mod command;
pub mod decode;
pub mod probe;
pub mod record;
pub mod recording;
pub mod session;
pub mod sink;
pub mod stacks;

pub use probe::{Drops, Mode, ModeChoice, Probe, ProbeOptions, Regions};
pub use sink::{Row, Sink, Snapshot, View};

/// Why tracing could not start or go on. Each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(
        "tracing needs root (or CAP_BPF and CAP_PERFMON): run it with sudo, e.g. `sudo tamalloc trace ...`"
    )]
    NotPrivileged,
    #[error("tracefs is not mounted at {0}; as root run: mount -t tracefs nodev {0}")]
    NoTracefs(String),
    #[error("tracepoint {name} is not available: {why}")]
    Tracepoint { name: String, why: String },
    #[error("the kernel refused the eBPF object")]
    Load(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the kernel's verifier rejected program {0}")]
    Verifier(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("could not attach to tracepoint {0}")]
    Attach(String, #[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("internal error: {0}")]
    Internal(String),
}
