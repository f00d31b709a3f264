//! ⑤ Where a trace goes: the terminal (the live view [`tui`], or [`terminal`]'s plain
//! text), trace files ([`jsonl`], [`csv`], [`perfetto`], [`chrome_json`], the binary
//! [`recording`]), the first-touch stacks' files ([`stacks`]: folded, flame graph, pprof)
//! and a Prometheus endpoint ([`prometheus`]). Each implements a trait the
//! tracer defines and calls, [`Sink`] for files and [`View`] for the rest; this module
//! depends on the tracer, never the other way.

pub mod chrome_json;
pub mod csv;
pub mod jsonl;
pub mod perfetto;
pub mod prometheus;
pub mod recording;
pub mod stacks;
pub mod terminal;
pub mod threaded;
pub mod tui;

use std::{fs::File, io, path::Path};

use crate::tracer::{Sink, Snapshot, View, decode::TraceEvent, record::Record};

/// Output formats of `tamalloc trace --output` (and `tamalloc report --format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (the documented schema).
    #[default]
    Jsonl,
    /// Perfetto's native protobuf trace (TracePackets): open in https://ui.perfetto.dev.
    Perfetto,
    /// Chrome JSON trace events: https://ui.perfetto.dev (best effort) or chrome://tracing.
    ChromeJson,
    /// A header row, then one row per record: `type`, then every field (see README).
    Csv,
    /// A binary recording (what `tamalloc record` writes): the cheapest to write; convert it
    /// later with `tamalloc report FILE --format jsonl|csv|perfetto|chrome-json -o OUT`.
    Record,
}

/// Opens `path` for a trace in `format`, failing with the path in the message.
pub fn open(path: &Path, format: Format) -> io::Result<Box<dyn Sink + Send>> {
    let file = File::create(path)?;
    Ok(match format {
        Format::Jsonl => Box::new(jsonl::JsonLines::new(file)),
        Format::Perfetto => Box::new(self::perfetto::Perfetto::new(file)),
        Format::ChromeJson => Box::new(chrome_json::ChromeJson::new(file)),
        Format::Csv => Box::new(self::csv::Csv::new(file)),
        Format::Record => Box::new(recording::Recording::new(file)),
    })
}

/// Opens `path` for a live trace in `format`: a recording is written by the session's
/// thread, every other format by a writer thread fed from the recording path
/// ([`threaded`]), so the thread that drains the ring never formats.
pub fn open_live(path: &Path, format: Format) -> io::Result<Box<dyn Sink + Send>> {
    let sink = open(path, format)?;
    Ok(match format {
        Format::Record => sink,
        _ => Box::new(threaded::Threaded::spawn(sink)?),
    })
}

/// Several files of one session (e.g. a Perfetto trace and a recording), given every call
/// in order; a write error ends all of them (the session stops writing to its sink).
pub struct TeeSink {
    sinks: Vec<Box<dyn Sink + Send>>,
}

impl TeeSink {
    pub fn new(sinks: Vec<Box<dyn Sink + Send>>) -> Self {
        Self { sinks }
    }
}

impl Sink for TeeSink {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        self.sinks.iter_mut().try_for_each(|s| s.record(r))
    }

    fn event_bytes(&mut self, raw: &[u8], ev: &TraceEvent) -> io::Result<()> {
        self.sinks
            .iter_mut()
            .try_for_each(|s| s.event_bytes(raw, ev))
    }

    fn thread_name(&mut self, pid: u32, tid: u32, name: &str) {
        self.sinks
            .iter_mut()
            .for_each(|s| s.thread_name(pid, tid, name));
    }

    /// Finishes every sink, even after one fails; the first error.
    fn finish(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        for s in &mut self.sinks {
            if let Err(e) = s.finish()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

/// Several views of one session, called in order (e.g. the table and the Prometheus
/// endpoint).
pub struct Tee {
    views: Vec<Box<dyn View>>,
}

impl Tee {
    pub fn new(views: Vec<Box<dyn View>>) -> Self {
        Self { views }
    }
}

impl View for Tee {
    fn event(&mut self, ev: &TraceEvent) {
        self.views.iter_mut().for_each(|v| v.event(ev));
    }

    fn refresh(&mut self, snap: &Snapshot) {
        self.views.iter_mut().for_each(|v| v.refresh(snap));
    }

    fn finish(&mut self, snap: &Snapshot) {
        self.views.iter_mut().for_each(|v| v.finish(snap));
    }

    fn flush(&mut self) {
        self.views.iter_mut().for_each(|v| v.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Count(std::rc::Rc<std::cell::RefCell<[u32; 4]>>);

    impl View for Count {
        fn event(&mut self, _: &TraceEvent) {
            self.0.borrow_mut()[0] += 1;
        }
        fn refresh(&mut self, _: &Snapshot) {
            self.0.borrow_mut()[1] += 1;
        }
        fn finish(&mut self, _: &Snapshot) {
            self.0.borrow_mut()[2] += 1;
        }
        fn flush(&mut self) {
            self.0.borrow_mut()[3] += 1;
        }
    }

    #[test]
    fn tee_calls_every_view() {
        let (a, b) = (Count::default(), Count::default());
        let (ca, cb) = (a.0.clone(), b.0.clone());
        let mut tee = Tee::new(vec![Box::new(a), Box::new(b)]);
        let snap = Snapshot {
            elapsed: std::time::Duration::ZERO,
            rows: Vec::new(),
            global: None,
            drops: Default::default(),
            stats_source: "procfs",
            command_status: None,
            stacks: Vec::new(),
        };
        tee.event(&TraceEvent::Exit { ts_ns: 1, pid: 2 });
        tee.flush();
        tee.refresh(&snap);
        tee.finish(&snap);
        assert_eq!(*ca.borrow(), [1, 1, 1, 1]);
        assert_eq!(*cb.borrow(), [1, 1, 1, 1]);
    }
}
