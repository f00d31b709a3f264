//! ⑤ What a session hands its results to: [`Record`]s to a [`Sink`], events and
//! [`Snapshot`]s to a [`View`]. The tracer defines these and calls them; `crate::output`
//! implements them (files, the terminal, Prometheus), so the tracer never depends on an
//! output.

use std::{io, process::ExitStatus, time::Duration};

use super::{Drops, aggregate::ProcState, decode::TraceEvent, record::Record};

/// One row of the live view.
#[derive(Clone, Debug)]
pub struct Row {
    pub pid: u32,
    pub state: ProcState,
    pub stats: Option<tamalloc_common::abi::ProcStats>,
    /// VmRSS change since the previous refresh, in KiB.
    pub rss_delta_kib: Option<i64>,
}

/// What a view shows at each refresh and at the end.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub rows: Vec<Row>,
    pub global: Option<tamalloc_common::abi::GlobalStats>,
    pub drops: Drops,
    /// `syscall` or `procfs`.
    pub stats_source: &'static str,
    pub command_status: Option<ExitStatus>,
    /// `--stacks`, in the final snapshot only: the `stack` records, most pages first.
    pub stacks: Vec<Record>,
}

/// Somewhere trace records go (a trace file). Records arrive in order, and the file must be
/// complete and valid once [`Sink::finish`] has run, including after Ctrl-C.
pub trait Sink {
    fn record(&mut self, r: &Record) -> io::Result<()>;
    /// An event, both as the ring item it was read from (`raw`) and decoded (`ev`, what
    /// [`decode`](super::decode::decode) makes of `raw`); in place of
    /// `record(&Record::Event(*ev))`, which is what it does unless a sink stores the bytes
    /// themselves (a recording).
    fn event_bytes(&mut self, _raw: &[u8], ev: &TraceEvent) -> io::Result<()> {
        self.record(&Record::Event(*ev))
    }
    /// The name of thread `tid` of process `pid` (not its leader, whose name is the
    /// process's), given once, before the first record from that thread, when the tracer
    /// could read it. Formats that do not name threads ignore it.
    fn thread_name(&mut self, _pid: u32, _tid: u32, _name: &str) {}
    /// Writes any trailer and flushes. Called exactly once, at the end.
    fn finish(&mut self) -> io::Result<()>;
}

/// Where a session shows itself.
pub trait View {
    /// A decoded event (faults only arrive when streaming was asked for).
    fn event(&mut self, ev: &TraceEvent);
    fn refresh(&mut self, snap: &Snapshot);
    fn finish(&mut self, snap: &Snapshot);
    /// The end of a batch of events: a view that buffers its output writes it out now.
    fn flush(&mut self) {}
}
