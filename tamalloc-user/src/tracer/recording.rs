//! The binary form of a trace (`tamalloc record`): the [`Record`]s of the schema, with the
//! events kept as the raw ring items they came off the ring as, so recording costs a copy
//! per event and no formatting. A reader decodes them with the live path's own
//! [`decode`], so a recording converts, record for record, to what a live exporter writes.
//!
//! ```text
//! header  "TAMREC\0" FORMAT_VERSION(u8)  schema(u32)  event_size(u32)  meta_len(u32)  meta
//!         (meta: the `meta` record as JSON: tool, kernel, mode, stats_source, events)
//! frames  type(u8)  len(u32)  payload      (integers little-endian)
//!         FRAME_EVENT   a ring item (`Event`, event_size bytes), as read from the ring
//!         FRAME_RECORD  any other record as JSON (stats, global, summary, drops: rare)
//!         FRAME_THREAD  pid(u32) tid(u32) name (UTF-8): `Sink::thread_name`
//! ```
//!
//! The session writes the `drops` record last, so a complete file ends with it. A file cut
//! short (the tracer killed) reads up to its last complete frame ([`Reader::truncated`]).

use std::io::{self, Read, Write};

use tamalloc_common::trace::Event;

use super::{
    Sink,
    decode::{TraceEvent, decode},
    record::{Record, SCHEMA_VERSION},
};

pub const MAGIC: &[u8; 7] = b"TAMREC\0";
/// Version of the framing (bumped when the layout above changes; the schema has its own).
pub const FORMAT_VERSION: u8 = 1;
pub const FRAME_EVENT: u8 = 1;
pub const FRAME_RECORD: u8 = 2;
pub const FRAME_THREAD: u8 = 3;
const EVENT_SIZE: usize = size_of::<Event>();
/// No frame this version writes comes near it; a larger length means a corrupt file.
const MAX_FRAME: u32 = 1 << 24;

/// Why a recording cannot be read. Each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("not a tamalloc recording (no TAMREC header)")]
    NotARecording,
    #[error(
        "written by a newer tamalloc ({what} {found}, this one reads up to {supported}): convert it with that version"
    )]
    Newer {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("its ring items are {found} bytes, this tamalloc's are {ours}: a foreign recording")]
    EventSize { found: u32, ours: usize },
    #[error("corrupt at byte {offset}: {why}")]
    Corrupt { offset: u64, why: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes a recording: the header with the first record (which must be `meta`), then frames.
pub struct Encoder<W: Write> {
    out: W,
    started: bool,
}

impl<W: Write> Encoder<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            started: false,
        }
    }

    /// A record: the header for `meta` (which comes first), a frame for any other.
    pub fn record(&mut self, r: &Record) -> io::Result<()> {
        if !self.started {
            let Record::Meta { .. } = r else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a recording starts with its meta record",
                ));
            };
            let meta = serde_json::to_vec(r)?;
            self.out.write_all(MAGIC)?;
            self.out.write_all(&[FORMAT_VERSION])?;
            self.out.write_all(&SCHEMA_VERSION.to_le_bytes())?;
            self.out.write_all(&(EVENT_SIZE as u32).to_le_bytes())?;
            self.out.write_all(&len_u32(meta.len())?.to_le_bytes())?;
            self.started = true;
            return self.out.write_all(&meta);
        }
        self.frame(FRAME_RECORD, &serde_json::to_vec(r)?)
    }

    /// An event as the ring item it was read from.
    pub fn event_bytes(&mut self, raw: &[u8]) -> io::Result<()> {
        self.frame(FRAME_EVENT, raw.get(..EVENT_SIZE).unwrap_or(raw))
    }

    pub fn thread_name(&mut self, pid: u32, tid: u32, name: &str) -> io::Result<()> {
        let mut p = Vec::with_capacity(8 + name.len());
        p.extend_from_slice(&pid.to_le_bytes());
        p.extend_from_slice(&tid.to_le_bytes());
        p.extend_from_slice(name.as_bytes());
        self.frame(FRAME_THREAD, &p)
    }

    fn frame(&mut self, ty: u8, payload: &[u8]) -> io::Result<()> {
        if !self.started {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a recording starts with its meta record",
            ));
        }
        self.out.write_all(&[ty])?;
        self.out.write_all(&len_u32(payload.len())?.to_le_bytes())?;
        self.out.write_all(payload)
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

fn len_u32(n: usize) -> io::Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n < MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))
}

/// One item of a recording, in file order.
#[derive(Debug, PartialEq)]
pub enum Item<'a> {
    /// An event: its ring bytes and what [`decode`] makes of them.
    Event {
        raw: &'a [u8],
        ev: TraceEvent,
    },
    Record(Record),
    ThreadName {
        pid: u32,
        tid: u32,
        name: String,
    },
}

/// Hands `item` to `sink` as the live session would have: an event with its ring bytes.
pub fn replay(item: Item<'_>, sink: &mut dyn Sink) -> io::Result<()> {
    match item {
        Item::Event { raw, ev } => sink.event_bytes(raw, &ev),
        Item::Record(r) => sink.record(&r),
        Item::ThreadName { pid, tid, name } => {
            sink.thread_name(pid, tid, &name);
            Ok(())
        }
    }
}

/// Reads a recording, item by item; the `meta` record comes first.
pub struct Reader<R: Read> {
    input: R,
    meta: Option<Record>,
    buf: Vec<u8>,
    offset: u64,
    truncated: bool,
}

/// Whether `head` (a file's first bytes) starts like a recording.
pub fn is_recording(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

impl<R: Read> Reader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Self, RecordingError> {
        let mut head = [0u8; 20];
        if read_full(&mut input, &mut head)? < head.len() || !is_recording(&head) {
            return Err(RecordingError::NotARecording);
        }
        let word =
            |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let (format, schema, event_size, meta_len) = (head[7], word(8), word(12), word(16));
        if format > FORMAT_VERSION {
            return Err(RecordingError::Newer {
                what: "recording format",
                found: format.into(),
                supported: FORMAT_VERSION.into(),
            });
        }
        if schema > SCHEMA_VERSION {
            return Err(RecordingError::Newer {
                what: "schema version",
                found: schema,
                supported: SCHEMA_VERSION,
            });
        }
        if event_size as usize != EVENT_SIZE {
            return Err(RecordingError::EventSize {
                found: event_size,
                ours: EVENT_SIZE,
            });
        }
        let corrupt = |why: String| RecordingError::Corrupt {
            offset: head.len() as u64,
            why,
        };
        if meta_len >= MAX_FRAME {
            return Err(corrupt(format!("a header of {meta_len} bytes")));
        }
        let mut meta = vec![0; meta_len as usize];
        if read_full(&mut input, &mut meta)? < meta.len() {
            return Err(corrupt("the header is cut short".into()));
        }
        let meta: Record = serde_json::from_slice(&meta).map_err(|e| corrupt(e.to_string()))?;
        if !matches!(meta, Record::Meta { .. }) {
            return Err(corrupt("the header holds no meta record".into()));
        }
        Ok(Self {
            input,
            meta: Some(meta),
            buf: Vec::new(),
            offset: head.len() as u64 + u64::from(meta_len),
            truncated: false,
        })
    }

    /// The next item, `None` at the end (or at a frame cut short: see [`Self::truncated`]).
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, RecordingError> {
        if let Some(meta) = self.meta.take() {
            return Ok(Some(Item::Record(meta)));
        }
        let mut head = [0u8; 5];
        match read_full(&mut self.input, &mut head)? {
            0 => return Ok(None),
            5 => {}
            _ => {
                self.truncated = true;
                return Ok(None);
            }
        }
        let at = self.offset;
        let corrupt = |why: String| RecordingError::Corrupt { offset: at, why };
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        if len >= MAX_FRAME {
            return Err(corrupt(format!("a frame of {len} bytes")));
        }
        self.buf.resize(len as usize, 0);
        if read_full(&mut self.input, &mut self.buf)? < self.buf.len() {
            self.truncated = true;
            return Ok(None);
        }
        self.offset += 5 + u64::from(len);
        let p = &self.buf[..];
        Ok(Some(match head[0] {
            FRAME_EVENT => match decode(p) {
                Some(ev) => Item::Event { raw: p, ev },
                None => return Err(corrupt("an event this tamalloc cannot decode".into())),
            },
            FRAME_RECORD => {
                Item::Record(serde_json::from_slice(p).map_err(|e| corrupt(e.to_string()))?)
            }
            FRAME_THREAD if p.len() >= 8 => Item::ThreadName {
                pid: u32::from_le_bytes([p[0], p[1], p[2], p[3]]),
                tid: u32::from_le_bytes([p[4], p[5], p[6], p[7]]),
                name: String::from_utf8_lossy(&p[8..]).into_owned(),
            },
            ty => return Err(corrupt(format!("a frame of unknown type {ty}"))),
        }))
    }

    /// Whether the input ended inside a frame (the tracer did not finish the file).
    pub fn truncated(&self) -> bool {
        self.truncated
    }
}

/// Reads into `buf` until it is full or the input ends; how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use tamalloc_common::trace::{EventKind, FaultKind};

    use super::*;

    fn meta() -> Record {
        Record::Meta {
            version: SCHEMA_VERSION,
            tool: "tamalloc test".into(),
            kernel: "6.18".into(),
            stats_source: "procfs".into(),
            events: true,
            mode: "tracepoint".into(),
            follows: "anon".into(),
        }
    }

    fn fault_bytes(page: u64) -> Vec<u8> {
        let e = Event {
            ts_ns: 10 + page,
            addr: 0x7000_0000 + (page << 12),
            arg1: 0x7000_0000,
            arg2: page,
            arg3: 6,
            pid: 42,
            tid: 43,
            kind: EventKind::Fault as u8,
            detail: FaultKind::WriteZero as u8,
            _pad: [0; 6],
        };
        // SAFETY: `Event` is plain data; reading its bytes is fine.
        unsafe { std::slice::from_raw_parts((&e as *const Event).cast::<u8>(), EVENT_SIZE) }
            .to_vec()
    }

    fn drops() -> Record {
        Record::Drops {
            count: 1,
            fault_events: 1,
            control_events: 0,
            map_full: 0,
            traced_full: 0,
            region_cut: 0,
            region_unresolved: 0,
            stacks_lost: 0,
            stacks_full: 0,
        }
    }

    fn sample() -> Vec<u8> {
        let mut enc = Encoder::new(Vec::new());
        enc.record(&meta()).expect("meta");
        enc.event_bytes(&fault_bytes(1)).expect("event");
        enc.thread_name(42, 43, "worker").expect("thread");
        enc.event_bytes(&fault_bytes(2)).expect("event");
        enc.record(&drops()).expect("drops");
        std::mem::take(enc.get_mut())
    }

    /// Every item, as owned records (thread names as text), and whether it was cut short.
    fn read_all(bytes: &[u8]) -> Result<(Vec<String>, bool), RecordingError> {
        let mut r = Reader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(item) = r.next_item()? {
            out.push(match item {
                Item::Event { raw, ev } => {
                    assert_eq!(raw.len(), EVENT_SIZE);
                    serde_json::to_string(&Record::Event(ev)).unwrap_or_default()
                }
                Item::Record(r) => serde_json::to_string(&r).unwrap_or_default(),
                Item::ThreadName { pid, tid, name } => format!("thread {pid} {tid} {name}"),
            });
        }
        Ok((out, r.truncated()))
    }

    #[test]
    fn round_trips_every_item_in_order() {
        let (items, truncated) = read_all(&sample()).expect("a recording");
        assert!(!truncated);
        assert_eq!(items.len(), 5);
        assert!(
            items[0].starts_with(r#"{"type":"meta","version":1,"#),
            "{}",
            items[0]
        );
        assert_eq!(
            items[1],
            r#"{"type":"fault","ts_ns":11,"pid":42,"tid":43,"kind":"write_zero","addr":1879052288,"region":1879048192,"page":1}"#
        );
        assert_eq!(items[2], "thread 42 43 worker");
        assert!(items[3].contains(r#""page":2"#));
        assert_eq!(
            items[4],
            serde_json::to_string(&drops()).unwrap_or_default()
        );
    }

    #[test]
    fn records_that_are_not_events_round_trip_a_stack_too() {
        let stack = Record::Stack {
            pid: 42,
            comm: "demo".into(),
            region: 0x7000_0000,
            read_zero: 1,
            write_zero: 2,
            cow_zero: 3,
            cow: 4,
            other: 5,
            frames: crate::tracer::record::sample_frames(),
        };
        let summary = Record::Summary {
            pid: 42,
            comm: "demo".into(),
            read_zero: 1,
            write_zero: 2,
            cow_zero: 3,
            cow: 4,
            other: 5,
            regions: 1,
            huge_faults: 0,
        };
        let mut enc = Encoder::new(Vec::new());
        for r in [meta(), summary.clone(), stack.clone(), drops()] {
            enc.record(&r).expect("record");
        }
        let bytes = std::mem::take(enc.get_mut());
        let mut r = Reader::new(bytes.as_slice()).expect("a recording");
        let mut back = Vec::new();
        while let Some(item) = r.next_item().expect("an item") {
            let Item::Record(rec) = item else {
                panic!("{item:?} is not a record");
            };
            back.push(rec);
        }
        assert!(!r.truncated());
        assert_eq!(back, [meta(), summary, stack, drops()]);
    }

    #[test]
    fn a_cut_file_reads_up_to_its_last_complete_frame() {
        let bytes = sample();
        let whole = read_all(&bytes).expect("whole").0;
        // Cut inside the last frame (drops), and inside the head of a frame.
        for cut in [bytes.len() - 3, bytes.len() - (5 + 20)] {
            let (items, truncated) = read_all(&bytes[..cut]).expect("cut");
            assert!(truncated, "cut at {cut}");
            assert_eq!(items[..], whole[..whole.len() - 1], "cut at {cut}");
        }
        // Cut at a frame boundary: complete as far as it goes, nothing to flag.
        let frame = 5 + serde_json::to_vec(&drops()).map(|v| v.len()).unwrap_or(0);
        let (items, truncated) = read_all(&bytes[..bytes.len() - frame]).expect("cut");
        assert!(!truncated);
        assert_eq!(items.len(), 4);
    }

    #[test]
    fn rejects_foreign_newer_and_corrupt_files() {
        let err = |b: &[u8]| read_all(b).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            err(b"{\"type\":\"meta\"}\n"),
            "not a tamalloc recording (no TAMREC header)"
        );
        assert_eq!(err(b""), "not a tamalloc recording (no TAMREC header)");
        let good = sample();
        let mut newer = good.clone();
        newer[7] = FORMAT_VERSION + 1;
        assert!(err(&newer).starts_with("written by a newer tamalloc (recording format 2"));
        let mut schema = good.clone();
        schema[8..12].copy_from_slice(&(SCHEMA_VERSION + 1).to_le_bytes());
        assert!(err(&schema).starts_with("written by a newer tamalloc (schema version 2"));
        let mut size = good.clone();
        size[12..16].copy_from_slice(&40u32.to_le_bytes());
        assert!(err(&size).starts_with("its ring items are 40 bytes"));
        let mut kind = good.clone();
        let first_frame =
            20 + u32::from_le_bytes([good[16], good[17], good[18], good[19]]) as usize;
        kind[first_frame] = 99;
        assert!(
            err(&kind).contains("a frame of unknown type 99"),
            "{}",
            err(&kind)
        );
    }

    #[test]
    fn the_header_comes_first() {
        let mut enc = Encoder::new(Vec::new());
        assert!(enc.record(&drops()).is_err());
        assert!(enc.event_bytes(&fault_bytes(1)).is_err());
    }
}
