//! A recording (`tamalloc record`, `trace --format record`): the trace in its binary form
//! ([`crate::tracer::recording`]), events copied as their ring bytes into a large buffer.
//! `tamalloc report FILE --format ...` converts it to any other format.

use std::io::{self, BufWriter, Write};

use crate::tracer::{Sink, decode::TraceEvent, record::Record, recording::Encoder};

/// Large enough that a burst of events costs a write(2) per 20 000 or so.
const BUFFER: usize = 1 << 20;

pub struct Recording<W: Write> {
    enc: Encoder<BufWriter<W>>,
    /// A failed thread name's error, for the next call that can return it.
    failed: Option<io::Error>,
}

impl<W: Write> Recording<W> {
    pub fn new(w: W) -> Self {
        Self {
            enc: Encoder::new(BufWriter::with_capacity(BUFFER, w)),
            failed: None,
        }
    }

    fn check(&mut self) -> io::Result<()> {
        self.failed.take().map_or(Ok(()), Err)
    }
}

impl<W: Write> Sink for Recording<W> {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        self.check()?;
        self.enc.record(r)
    }

    fn event_bytes(&mut self, raw: &[u8], _ev: &TraceEvent) -> io::Result<()> {
        self.check()?;
        self.enc.event_bytes(raw)
    }

    fn thread_name(&mut self, pid: u32, tid: u32, name: &str) {
        // The Sink contract gives a name no way to fail: the error waits for the next call.
        if let Err(e) = self.enc.thread_name(pid, tid, name) {
            self.failed.get_or_insert(e);
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.check()?;
        self.enc.get_mut().flush()
    }
}
