//! A file exporter on a thread of its own, fed from the recording path: the session's
//! thread only frames each event's ring bytes into a batch (as a recording does, no
//! formatting), and a writer thread reads the batches back with the recording's reader and
//! hands them to the exporter (JSON lines, CSV, Perfetto) as the session would have. Same
//! records in the same order, so the same file; the formatting leaves the thread that
//! drains the ring.

use std::{
    io::{self, Read},
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread::JoinHandle,
};

use crate::tracer::{
    Sink,
    decode::TraceEvent,
    record::Record,
    recording::{Encoder, Reader, replay},
};

/// Bytes per batch handed to the writer (about 16 000 events).
const BATCH: usize = 1 << 20;
/// Batches in flight: when the writer falls this far behind, the session waits for it (and
/// the ring, not memory, absorbs the rest, counting any drop).
const IN_FLIGHT: usize = 16;

pub struct Threaded {
    enc: Encoder<Vec<u8>>,
    tx: Option<SyncSender<Vec<u8>>>,
    writer: Option<JoinHandle<io::Result<()>>>,
}

impl Threaded {
    /// Starts the writer thread, which owns `sink` from now on.
    pub fn spawn(mut sink: Box<dyn Sink + Send>) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let writer = std::thread::Builder::new()
            .name("tamalloc-writer".into())
            .spawn(move || {
                let bad = |e| io::Error::other(format!("reading back the trace: {e}"));
                let mut r = Reader::new(Batches {
                    rx,
                    cur: Vec::new(),
                    at: 0,
                })
                .map_err(bad)?;
                while let Some(item) = r.next_item().map_err(bad)? {
                    replay(item, sink.as_mut())?;
                }
                sink.finish()
            })?;
        Ok(Self {
            enc: Encoder::new(Vec::with_capacity(BATCH + 4096)),
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Sends the batch once it is full (`force`: whatever it holds).
    fn send(&mut self, force: bool) -> io::Result<()> {
        let buf = self.enc.get_mut();
        if buf.is_empty() || (!force && buf.len() < BATCH) {
            return Ok(());
        }
        let batch = std::mem::replace(buf, Vec::with_capacity(BATCH + 4096));
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(batch).is_ok());
        if sent { Ok(()) } else { Err(self.join()) }
    }

    /// Waits for the writer; why it stopped (it only stops early on an error).
    fn join(&mut self) -> io::Error {
        self.tx = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the trace writer thread panicked"),
            _ => io::Error::other("the trace writer stopped"),
        }
    }
}

impl Sink for Threaded {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        self.enc.record(r)?;
        self.send(false)
    }

    fn event_bytes(&mut self, raw: &[u8], _ev: &TraceEvent) -> io::Result<()> {
        self.enc.event_bytes(raw)?;
        self.send(false)
    }

    fn thread_name(&mut self, pid: u32, tid: u32, name: &str) {
        // Into memory: cannot fail but for an oversized name, which a comm never is.
        let _ = self.enc.thread_name(pid, tid, name);
    }

    /// Hands over the last batch and waits for the writer to finish the file.
    fn finish(&mut self) -> io::Result<()> {
        self.send(true)?;
        self.tx = None;
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(done)) => done,
            Some(Err(_)) => Err(io::Error::other("the trace writer thread panicked")),
            None => Ok(()),
        }
    }
}

/// A session that ends without `finish` (an error) still leaves the writer's file as
/// complete as what it was given: the end of the stream, then the writer's own finish.
impl Drop for Threaded {
    fn drop(&mut self) {
        let _ = self.send(true);
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The batches as one stream of bytes.
struct Batches {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
}

impl Read for Batches {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            match self.rx.recv() {
                Ok(b) => (self.cur, self.at) = (b, 0),
                // The session has finished (or given up): the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
