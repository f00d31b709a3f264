//! `tamalloc report`: the picture of lazy zeroing, from a trace (JSON lines or a recording),
//! and the conversion of a trace to another format ([`read::convert`]).
//!
//! Per process, over time (seconds since the trace started): bytes reserved in tamalloc
//! regions (replayed from the region, unmap, mremap, fork, exec and exit records with the
//! tracer's own [`Aggregator`](crate::tracer::aggregate::Aggregator)), resident bytes (the
//! kernel's tamalloc resident count from `stats` records when it has one, else the pages
//! made resident by first-touch writes) and VmRSS, above the pages first touched,
//! cumulative, by kind (from the `fault` records, or from the `stats` records' counters when
//! faults were not streamed). Drawn as SVG with plotters; text is emitted as SVG `<text>`, so
//! no font is needed.
//!
//! In data-flow order: `read` reads either form of trace file, `load` reduces it to a
//! [`Trace`], `series` turns that into [`Series`], `svg` draws them; [`text_summary`] says
//! the same in numbers.

mod load;
pub mod read;
mod series;
mod svg;

use std::path::PathBuf;

use tamalloc_common::trace::FaultKind;

use self::series::MIB;
pub use self::{
    load::{Proc, Trace},
    series::{KIND_COLORS, RESERVED, RESIDENT, Series, VM_RSS, series},
    svg::{render_svg, write},
};

/// Why a report could not be made. Each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a trace record ({why})")]
    Parse {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{path}")]
    Recording {
        path: PathBuf,
        #[source]
        source: crate::tracer::recording::RecordingError,
    },
    #[error("{0} has no traced process with tamalloc regions")]
    Empty(PathBuf),
    #[error("pid {pid} is not in the trace (its processes: {known})")]
    NoSuchPid { pid: u32, known: String },
    #[error("drawing the report: {0}")]
    Draw(String),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A few lines per process: what the picture shows, in numbers.
pub fn text_summary(t: &Trace, pids: &[u32]) -> String {
    let mut out = String::new();
    for pid in pids {
        let Some(p) = t.procs.get(pid) else { continue };
        let kinds: Vec<String> = FaultKind::ALL
            .iter()
            .zip(p.totals)
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        out.push_str(&format!(
            "pid {pid} ({}): {} region(s), {:.1} MiB reserved at most; pages first touched: {}\n",
            p.comm,
            p.regions,
            p.peak_reserved as f64 / MIB,
            kinds.join(", ")
        ));
    }
    out
}
