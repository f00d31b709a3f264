//! The file's framing, the sequence's interned strings, and the few packet shapes the
//! exporter writes.
//!
//! A trace file is a `Trace` message: its packets, each as field 1 (a tag byte, a varint
//! length, the `TracePacket`). Packets are encoded whole into a buffer that is written only
//! at a packet boundary, so the file on disk always ends with a complete packet, even when
//! the tracer is killed between writes.

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use perfetto_protos::{
    debug_annotation::{DebugAnnotation, DebugAnnotationName},
    interned_data::InternedData,
    profile_common::InternedString,
    trace_packet::{TracePacket, trace_packet::SequenceFlags},
    track_event::{EventCategory, EventName, TrackEvent, track_event::Type},
};
use protobuf::{Message as _, MessageField};

/// `Trace.packet`: field 1, length-delimited.
const PACKET_TAG: u8 = (1 << 3) | 2;
/// Whole packets are kept until this many bytes, then written in one call.
const WRITE_AT: usize = 1 << 16;
/// The one sequence every packet of the file is on (the file has one writer).
pub const SEQUENCE_ID: u32 = 1;

/// Writes packets whole, in order.
pub struct PacketWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> PacketWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(WRITE_AT * 2),
        }
    }

    pub fn push(&mut self, mut p: TracePacket) -> io::Result<()> {
        p.set_trusted_packet_sequence_id(SEQUENCE_ID);
        self.buf.push(PACKET_TAG);
        p.write_length_delimited_to_vec(&mut self.buf)
            .map_err(io::Error::other)?;
        if self.buf.len() >= WRITE_AT {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and flushes.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.out.flush()
    }
}

/// The kinds of string a packet refers to by interning id (`iid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    EventName,
    Category,
    AnnotationName,
    /// String values of debug annotations (fault kinds, how a region was made).
    StringValue,
}

/// The sequence's interned strings: each string is given an id (from 1, per table) the
/// first time a packet uses it, and that packet carries the definition in its
/// `interned_data`. The ids stay valid for the whole sequence: its incremental state is
/// cleared once, on its first packet, and never again.
//
// First-touch stacks are not interned here: their profile packet carries its own tables
// (`super::stacks`).
#[derive(Default)]
pub struct Interner {
    tables: [BTreeMap<String, u64>; 4],
}

impl Interner {
    /// The id of `s` in `table`, adding its definition to `new` when it is new.
    pub fn iid(&mut self, table: Table, s: &str, new: &mut InternedData) -> u64 {
        let t = &mut self.tables[table as usize];
        if let Some(&iid) = t.get(s) {
            return iid;
        }
        let iid = t.len() as u64 + 1;
        t.insert(s.to_owned(), iid);
        let (iid_, name) = (Some(iid), Some(s.to_owned()));
        match table {
            Table::EventName => new.event_names.push(EventName {
                iid: iid_,
                name,
                ..Default::default()
            }),
            Table::Category => new.event_categories.push(EventCategory {
                iid: iid_,
                name,
                ..Default::default()
            }),
            Table::AnnotationName => new.debug_annotation_names.push(DebugAnnotationName {
                iid: iid_,
                name,
                ..Default::default()
            }),
            Table::StringValue => new.debug_annotation_string_values.push(InternedString {
                iid: iid_,
                str: Some(s.as_bytes().to_vec()),
                ..Default::default()
            }),
        }
        iid
    }
}

/// A debug annotation's value.
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    /// An address (the UI shows it in hex).
    Ptr(u64),
    Uint(u64),
    Bool(bool),
    /// An interned string.
    Str(&'a str),
}

/// A track event being built: its interned names are resolved as it is built, their
/// definitions collected for the packet that carries it.
pub struct Event<'i> {
    interner: &'i mut Interner,
    new: InternedData,
    ev: TrackEvent,
}

impl<'i> Event<'i> {
    pub fn new(interner: &'i mut Interner, ty: Type, track_uuid: u64) -> Self {
        let mut ev = TrackEvent::new();
        ev.set_type(ty);
        ev.set_track_uuid(track_uuid);
        Self {
            interner,
            new: InternedData::new(),
            ev,
        }
    }

    /// Names the event (and puts it in the `tamalloc` category).
    pub fn name(mut self, name: &str) -> Self {
        let iid = self.interner.iid(Table::EventName, name, &mut self.new);
        self.ev.set_name_iid(iid);
        let cat = self
            .interner
            .iid(Table::Category, "tamalloc", &mut self.new);
        self.ev.category_iids.push(cat);
        self
    }

    pub fn arg(mut self, name: &str, value: Arg<'_>) -> Self {
        let mut a = DebugAnnotation::new();
        a.set_name_iid(
            self.interner
                .iid(Table::AnnotationName, name, &mut self.new),
        );
        match value {
            Arg::Ptr(v) => a.set_pointer_value(v),
            Arg::Uint(v) => a.set_uint_value(v),
            Arg::Bool(v) => a.set_bool_value(v),
            Arg::Str(s) => {
                a.set_string_value_iid(self.interner.iid(Table::StringValue, s, &mut self.new))
            }
        }
        self.ev.debug_annotations.push(a);
        self
    }

    pub fn counter(mut self, value: i64) -> Self {
        self.ev.set_counter_value(value);
        self
    }

    /// The packet: at `ts_ns` (the sequence's default clock, `CLOCK_MONOTONIC`), needing the
    /// sequence's incremental state (its interned strings and defaults).
    pub fn packet(self, ts_ns: u64) -> TracePacket {
        let mut p = TracePacket::new();
        p.set_timestamp(ts_ns);
        p.set_sequence_flags(SequenceFlags::SEQ_NEEDS_INCREMENTAL_STATE as u32);
        if self.new != InternedData::new() {
            p.interned_data = MessageField::some(self.new);
        }
        p.set_track_event(self.ev);
        p
    }
}
