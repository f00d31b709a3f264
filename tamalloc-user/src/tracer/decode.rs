//! Ring-buffer records to typed events. A [`TraceEvent`] is also the event records of the
//! trace schema ([`super::record::Record::Event`]): it serialises as
//! `{"type": "<variant in snake_case>", ...fields}`.

use serde::{Deserialize, Serialize};
use tamalloc_common::trace::{
    Event, EventKind, FaultKind, REGION_BRK, REGION_FALLBACK, REGION_MMAP, REGION_NAMED,
};

/// How a region was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MadeBy {
    /// Syscall 554.
    #[default]
    Tamalloc,
    /// The documented mmap fallback of a 554 that returned -ENOSYS.
    Fallback,
    /// A private anonymous `mmap` (`--regions anon`).
    Mmap,
    /// The heap, grown with `brk` (`--regions anon`).
    Brk,
    /// A range named NAME with `prctl(PR_SET_VMA_ANON_NAME)` (`--regions name:NAME`).
    Named,
}

impl MadeBy {
    /// From a region event's `detail`; `None` for a value this build does not know.
    pub const fn from_detail(d: u8) -> Option<Self> {
        match d {
            0 => Some(Self::Tamalloc),
            REGION_FALLBACK => Some(Self::Fallback),
            REGION_MMAP => Some(Self::Mmap),
            REGION_BRK => Some(Self::Brk),
            REGION_NAMED => Some(Self::Named),
            _ => None,
        }
    }

    /// The name the records use.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tamalloc => "tamalloc",
            Self::Fallback => "fallback",
            Self::Mmap => "mmap",
            Self::Brk => "brk",
            Self::Named => "named",
        }
    }
}

/// One decoded ring-buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TraceEvent {
    Fault {
        ts_ns: u64,
        pid: u32,
        tid: u32,
        /// `read_zero`, `write_zero`, `cow_zero`, `cow` or `other`.
        #[serde(with = "kind_name")]
        kind: FaultKind,
        addr: u64,
        /// The region's identity: its first address when it was created.
        region: u64,
        /// The page's index in the region.
        page: u64,
        /// The x86 error code; not recorded (0 when read back from a trace).
        #[serde(skip)]
        error_code: u64,
    },
    Region {
        ts_ns: u64,
        pid: u32,
        tid: u32,
        addr: u64,
        len: u64,
        /// Made by the documented mmap fallback rather than syscall 554.
        fallback: bool,
        /// How it was made: `tamalloc`, `fallback`, `mmap`, `brk` or `named` (traces written before
        /// `--regions` have none: `tamalloc`; their `fallback` still tells the fallback's apart).
        #[serde(default)]
        made_by: MadeBy,
    },
    Unmap {
        ts_ns: u64,
        pid: u32,
        addr: u64,
        len: u64,
        /// Bytes of region pages that went away.
        region_bytes: u64,
    },
    Remap {
        ts_ns: u64,
        pid: u32,
        old_addr: u64,
        old_len: u64,
        new_addr: u64,
        new_len: u64,
    },
    Fork {
        ts_ns: u64,
        pid: u32,
        child: u32,
    },
    Exec {
        ts_ns: u64,
        pid: u32,
    },
    Exit {
        ts_ns: u64,
        pid: u32,
    },
}

impl TraceEvent {
    /// When the event happened, and the process it is about (for a fork, the parent).
    fn when_and_who(&self) -> (u64, u32) {
        match *self {
            TraceEvent::Fault { ts_ns, pid, .. }
            | TraceEvent::Region { ts_ns, pid, .. }
            | TraceEvent::Unmap { ts_ns, pid, .. }
            | TraceEvent::Remap { ts_ns, pid, .. }
            | TraceEvent::Fork { ts_ns, pid, .. }
            | TraceEvent::Exec { ts_ns, pid }
            | TraceEvent::Exit { ts_ns, pid } => (ts_ns, pid),
        }
    }

    pub fn ts_ns(&self) -> u64 {
        self.when_and_who().0
    }

    pub fn pid(&self) -> u32 {
        self.when_and_who().1
    }
}

/// A fault kind as its name in traces.
mod kind_name {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use tamalloc_common::trace::FaultKind;

    pub fn serialize<S: Serializer>(kind: &FaultKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FaultKind, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| D::Error::custom(format!("unknown fault kind {name:?}")))
    }
}

/// Decodes one record. The ring gives no alignment guarantee for our type, so the bytes are
/// copied out with `read_unaligned` before use. `None` for a short or unknown record.
pub fn decode(bytes: &[u8]) -> Option<TraceEvent> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: the length is checked above and `Event` is plain data valid for any bits.
    let e: Event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) };
    let (ts_ns, pid) = (e.ts_ns, e.pid);
    Some(match EventKind::from_u8(e.kind)? {
        EventKind::Fault => TraceEvent::Fault {
            ts_ns,
            pid,
            tid: e.tid,
            kind: FaultKind::from_u8(e.detail)?,
            addr: e.addr,
            region: e.arg1,
            page: e.arg2,
            error_code: e.arg3,
        },
        EventKind::Region => TraceEvent::Region {
            ts_ns,
            pid,
            tid: e.tid,
            addr: e.addr,
            len: e.arg1,
            fallback: e.detail == REGION_FALLBACK,
            made_by: MadeBy::from_detail(e.detail)?,
        },
        EventKind::Unmap => TraceEvent::Unmap {
            ts_ns,
            pid,
            addr: e.addr,
            len: e.arg1,
            region_bytes: e.arg2,
        },
        EventKind::Remap => TraceEvent::Remap {
            ts_ns,
            pid,
            old_addr: e.addr,
            old_len: e.arg1,
            new_addr: e.arg2,
            new_len: e.arg3,
        },
        EventKind::Fork => TraceEvent::Fork {
            ts_ns,
            pid,
            child: u32::try_from(e.arg1).ok()?,
        },
        EventKind::Exec => TraceEvent::Exec { ts_ns, pid },
        EventKind::Exit => TraceEvent::Exit { ts_ns, pid },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(e: &Event) -> Vec<u8> {
        // SAFETY: `Event` is plain data; reading its bytes is fine.
        unsafe { std::slice::from_raw_parts((e as *const Event).cast::<u8>(), size_of::<Event>()) }
            .to_vec()
    }

    #[test]
    fn decodes_a_fault_from_unaligned_bytes() {
        let e = Event {
            ts_ns: 7,
            addr: 0x7000_1000,
            arg1: 0x7000_0000,
            arg2: 1,
            arg3: 6,
            pid: 42,
            tid: 43,
            kind: EventKind::Fault as u8,
            detail: FaultKind::WriteZero as u8,
            _pad: [0; 6],
        };
        let mut buf = vec![0u8];
        buf.extend(bytes(&e));
        assert_eq!(
            decode(&buf[1..]),
            Some(TraceEvent::Fault {
                ts_ns: 7,
                pid: 42,
                tid: 43,
                kind: FaultKind::WriteZero,
                addr: 0x7000_1000,
                region: 0x7000_0000,
                page: 1,
                error_code: 6,
            })
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[0; 8]), None);
        let e = Event {
            kind: 200,
            ..Event::default()
        };
        assert_eq!(decode(&bytes(&e)), None);
    }
}
