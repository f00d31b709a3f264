//! The first-touch fault tracer: kernel event → eBPF maps/ring → [`decode`] →
//! [`aggregate`] → view and exporters.

pub mod aggregate;
pub mod decode;
pub mod probe;
pub mod prometheus;
pub mod record;
pub mod session;
pub mod view;

pub use probe::{Drops, Probe, ProbeOptions};

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
