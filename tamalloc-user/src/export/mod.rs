//! Trace exporters. Each takes [`Record`]s in order and must leave a complete, valid file
//! when [`Sink::finish`] runs, including after Ctrl-C.

pub mod csv;
pub mod jsonl;
pub mod perfetto;

use std::{fs::File, io, path::Path};

use crate::tracer::record::Record;

/// Somewhere trace records go.
pub trait Sink {
    fn record(&mut self, r: &Record) -> io::Result<()>;
    /// Writes any trailer and flushes. Called exactly once, at the end.
    fn finish(&mut self) -> io::Result<()>;
}

/// Output formats of `tamalloc trace --output`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (the documented schema).
    #[default]
    Jsonl,
    /// Chrome JSON trace events: open in https://ui.perfetto.dev or chrome://tracing.
    Perfetto,
    /// A header row, then one row per record: `type`, then every field (see README).
    Csv,
}

/// Opens `path` for a trace in `format`, failing with the path in the message.
pub fn open(path: &Path, format: Format) -> io::Result<Box<dyn Sink + Send>> {
    let file = File::create(path)?;
    Ok(match format {
        Format::Jsonl => Box::new(jsonl::JsonLines::new(file)),
        Format::Perfetto => Box::new(self::perfetto::Perfetto::new(file)),
        Format::Csv => Box::new(self::csv::Csv::new(file)),
    })
}
