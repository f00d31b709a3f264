//! Reading a trace file of either form, JSON lines or a recording (told apart by the
//! recording's magic), item by item in file order; and converting one to any output, by
//! handing its items to a [`Sink`] as the live session did.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read as _},
    path::Path,
};

use super::ReportError;
use crate::tracer::{
    Sink,
    record::Record,
    recording::{self, Item, Reader},
};

/// What reading a trace found besides its items.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadInfo {
    /// Items read (records, events and thread names).
    pub items: u64,
    /// A recording that ends inside a frame: the tracer did not finish it (killed).
    pub truncated: bool,
}

/// Calls `each` with every item of the trace at `path`. JSON lines give records only (events
/// among them); records of types this version does not know are skipped.
pub fn read(
    path: &Path,
    mut each: impl FnMut(Item<'_>) -> Result<(), ReportError>,
) -> Result<ReadInfo, ReportError> {
    let read = |source| ReportError::Read {
        path: path.to_owned(),
        source,
    };
    let mut input = BufReader::with_capacity(1 << 20, File::open(path).map_err(read)?);
    let mut info = ReadInfo::default();
    if recording::is_recording(input.fill_buf().map_err(read)?) {
        let bad = |source| ReportError::Recording {
            path: path.to_owned(),
            source,
        };
        let mut r = Reader::new(input).map_err(bad)?;
        while let Some(item) = r.next_item().map_err(bad)? {
            info.items += 1;
            each(item)?;
        }
        info.truncated = r.truncated();
        return Ok(info);
    }
    let mut line = String::new();
    for n in 1.. {
        line.clear();
        if input.by_ref().read_line(&mut line).map_err(read)? == 0 {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let parse = |why: String| ReportError::Parse {
            path: path.to_owned(),
            line: n,
            why,
        };
        let r = match serde_json::from_str::<Record>(&line) {
            Ok(r) => r,
            Err(e) => {
                // A record type from a newer schema: skip it. Anything else is an error.
                let v: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| parse(e.to_string()))?;
                if v.get("type").is_some_and(serde_json::Value::is_string) && e.is_data() {
                    continue;
                }
                return Err(parse(e.to_string()));
            }
        };
        info.items += 1;
        each(Item::Record(r))?;
    }
    Ok(info)
}

/// Writes the trace at `path` into `sink` (which `out` names, in errors), item for item.
pub fn convert(path: &Path, sink: &mut dyn Sink, out: &Path) -> Result<ReadInfo, ReportError> {
    let write = |source| ReportError::Write {
        path: out.to_owned(),
        source,
    };
    let info = read(path, |item| recording::replay(item, sink).map_err(write))?;
    sink.finish().map_err(write)?;
    Ok(info)
}
