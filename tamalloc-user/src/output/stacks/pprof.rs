//! A pprof profile (`profile.proto`, gzip-compressed, as `go tool pprof`, Pyroscope and Parca
//! read it) of the first-touch stacks.
//!
//! - Sample types: for each kind its pages (`read_zero_pages`/`pages`, ...), then for each
//!   kind its bytes (`read_zero_bytes`/`bytes`, ...); `write_zero_pages` (pages that cost
//!   memory) is the default.
//! - One sample per stack of the [`StackSet`] (process, region, call path), labelled `pid`
//!   (a number), `comm` and `region` (hex; `0x0` when it could not be named).
//! - A location per distinct frame: with its function (name, source file) and line when it
//!   was symbolized, the bare address when not. Its mapping is its object file (`module`,
//!   with `build_id`), one per load address: `memory_start` and `file_offset` are chosen so
//!   that address − start + offset is the frame's `file_offset`, so pprof can symbolize an
//!   unresolved address itself from the binary. Kernel frames without a module are in
//!   `[kernel.kallsyms]`, as perf names the kernel.

use std::{
    collections::{BTreeMap, HashMap},
    io::{self, Write},
};

use flate2::{Compression, write::GzEncoder};
use prost::Message as _;
use tamalloc_common::trace::FaultKind;

use super::{StackSet, frame_key, proto};
use crate::tracer::record::StackFrame;

/// The sample type `go tool pprof` and the UIs show unless told otherwise.
pub const DEFAULT_SAMPLE_TYPE: &str = "write_zero_pages";

/// perf's name for the kernel's image.
const KERNEL: &str = "[kernel.kallsyms]";

/// The sample types, in value order: `(type, unit)`.
pub fn sample_types() -> Vec<(String, &'static str)> {
    let pages = FaultKind::ALL.map(|k| (format!("{}_pages", k.name()), "pages"));
    let bytes = FaultKind::ALL.map(|k| (format!("{}_bytes", k.name()), "bytes"));
    pages.into_iter().chain(bytes).collect()
}

/// Writes the profile of `set`, gzip-compressed.
pub fn write(set: &StackSet, out: &mut impl Write) -> io::Result<()> {
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&profile(set).encode_to_vec())?;
    gz.finish()?;
    Ok(())
}

/// The string table: `""` first, every other string once.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.id("");
        s
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = i64::try_from(self.table.len()).unwrap_or(i64::MAX);
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// A mapping's identity: its file, build ID, and load base (address − file offset) when the
/// frames say it.
type MappingKey = (String, Option<String>, Option<u64>);

/// What a mapping's frames add up to.
struct MappingSpan {
    id: u64,
    low: u64,
    high: u64,
    functions: bool,
    files: bool,
    lines: bool,
}

/// The tables being built, with the ids handed out so far (ids are 1-based: 0 means none).
#[derive(Default)]
struct Tables {
    mappings: BTreeMap<MappingKey, MappingSpan>,
    functions: HashMap<(String, Option<String>), u64>,
    function_list: Vec<proto::Function>,
    locations: HashMap<super::FrameKey, u64>,
    location_list: Vec<proto::Location>,
}

impl Tables {
    fn location(&mut self, f: &StackFrame, strings: &mut Strings) -> u64 {
        let key = frame_key(f);
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let id = self.location_list.len() as u64 + 1;
        let mapping_id = self.mapping(f);
        let line = f
            .function
            .as_ref()
            .map(|name| proto::Line {
                function_id: self.function(name, f.file.as_deref(), strings),
                line: f.line.map_or(0, i64::from),
            })
            .into_iter()
            .collect();
        self.location_list.push(proto::Location {
            id,
            mapping_id,
            address: f.addr,
            line,
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    fn function(&mut self, name: &str, file: Option<&str>, strings: &mut Strings) -> u64 {
        let key = (name.to_owned(), file.map(str::to_owned));
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.function_list.len() as u64 + 1;
        let name = strings.id(name);
        self.function_list.push(proto::Function {
            id,
            name,
            system_name: name,
            filename: file.map_or(0, |f| strings.id(f)),
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }

    /// The mapping `f` is in (0: none, a user frame with no module).
    fn mapping(&mut self, f: &StackFrame) -> u64 {
        let file = match (&f.module, f.kernel) {
            (Some(m), _) => m.clone(),
            (None, true) => KERNEL.to_owned(),
            (None, false) => return 0,
        };
        let base = f.file_offset.and_then(|off| f.addr.checked_sub(off));
        let next = self.mappings.len() as u64 + 1;
        let span = self
            .mappings
            .entry((file, f.build_id.clone(), base))
            .or_insert(MappingSpan {
                id: next,
                low: f.addr,
                high: f.addr,
                functions: true,
                files: true,
                lines: true,
            });
        span.low = span.low.min(f.addr);
        span.high = span.high.max(f.addr);
        span.functions &= f.function.is_some();
        span.files &= f.file.is_some();
        span.lines &= f.line.is_some();
        span.id
    }

    fn mapping_list(&self, strings: &mut Strings) -> Vec<proto::Mapping> {
        let mut out: Vec<proto::Mapping> = self
            .mappings
            .iter()
            .map(|((file, build_id, base), s)| proto::Mapping {
                id: s.id,
                memory_start: s.low,
                memory_limit: s.high.saturating_add(1),
                file_offset: base.map_or(0, |b| s.low - b),
                filename: strings.id(file),
                build_id: build_id.as_deref().map_or(0, |b| strings.id(b)),
                has_functions: s.functions,
                has_filenames: s.files,
                has_line_numbers: s.lines,
                has_inline_frames: false,
            })
            .collect();
        out.sort_by_key(|m| m.id);
        out
    }
}

/// The profile of `set`, uncompressed.
pub(super) fn profile(set: &StackSet) -> proto::Profile {
    let mut strings = Strings::new();
    let sample_type: Vec<proto::ValueType> = sample_types()
        .iter()
        .map(|(ty, unit)| proto::ValueType {
            r#type: strings.id(ty),
            unit: strings.id(unit),
        })
        .collect();
    let (pid, comm, region) = (strings.id("pid"), strings.id("comm"), strings.id("region"));
    let mut tables = Tables::default();
    // pprof names mapping 1 as the profile's binary: the first program (not a shared
    // object, not the kernel) any stack runs in, when there is one.
    let program = set.iter().flat_map(|s| s.frames.iter().rev()).find(|f| {
        !f.kernel
            && f.module
                .as_deref()
                .is_some_and(|m| !m.contains(".so") && !m.starts_with('['))
    });
    if let Some(f) = program {
        tables.mapping(f);
    }
    let mut sample = Vec::with_capacity(set.len());
    for s in set.iter() {
        // Ids handed out root first, so the next mappings are the outermost frames' objects.
        let mut location_id: Vec<u64> = s
            .frames
            .iter()
            .rev()
            .map(|f| tables.location(f, &mut strings))
            .collect();
        location_id.reverse();
        let value = s
            .pages
            .into_iter()
            .chain(s.bytes())
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX))
            .collect();
        let label = vec![
            proto::Label {
                key: pid,
                num: i64::from(s.pid),
                ..proto::Label::default()
            },
            proto::Label {
                key: comm,
                str: strings.id(&s.comm),
                ..proto::Label::default()
            },
            proto::Label {
                key: region,
                str: strings.id(&format!("{:#x}", s.region)),
                ..proto::Label::default()
            },
        ];
        sample.push(proto::Sample {
            location_id,
            value,
            label,
        });
    }
    let mapping = tables.mapping_list(&mut strings);
    let period_type = Some(proto::ValueType {
        r#type: strings.id("first_touches"),
        unit: strings.id("pages"),
    });
    let comment = vec![
        strings
            .id("tamalloc --stacks: pages first touched, by process, region, kind and call path"),
    ];
    let default_sample_type = strings.id(DEFAULT_SAMPLE_TYPE);
    proto::Profile {
        sample_type,
        sample,
        mapping,
        location: tables.location_list,
        function: tables.function_list,
        string_table: strings.table,
        period_type,
        // Every first touch is counted, none sampled.
        period: 1,
        comment,
        default_sample_type,
        ..proto::Profile::default()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::{super::tests::sample, *};

    /// The profile written for the sample set, gunzipped and decoded with prost.
    fn decoded() -> proto::Profile {
        let set: StackSet = sample().into_iter().collect();
        let mut gz = Vec::new();
        write(&set, &mut gz).expect("write");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut raw)
            .expect("gzip");
        proto::Profile::decode(raw.as_slice()).expect("a Profile")
    }

    #[test]
    fn sample_types_are_pages_then_bytes_per_kind_write_zero_pages_first_shown() {
        let p = decoded();
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        let types: Vec<String> = p
            .sample_type
            .iter()
            .map(|t| format!("{}/{}", s(t.r#type), s(t.unit)))
            .collect();
        assert_eq!(
            types,
            [
                "read_zero_pages/pages",
                "write_zero_pages/pages",
                "cow_zero_pages/pages",
                "cow_pages/pages",
                "other_pages/pages",
                "read_zero_bytes/bytes",
                "write_zero_bytes/bytes",
                "cow_zero_bytes/bytes",
                "cow_bytes/bytes",
                "other_bytes/bytes",
            ]
        );
        assert_eq!(s(p.default_sample_type), "write_zero_pages");
    }

    #[test]
    fn samples_have_their_values_labels_and_symbolized_frames() {
        let p = decoded();
        let s = |i: i64| p.string_table[i as usize].clone();
        let loc = |id: u64| &p.location[(id - 1) as usize];
        let func = |id: u64| &p.function[(id - 1) as usize];
        let map = |id: u64| &p.mapping[(id - 1) as usize];
        // A frame as `function file:line @module`, or `0xADDR @module`.
        let name = |id: u64| {
            let l = loc(id);
            let m = if l.mapping_id == 0 {
                String::new()
            } else {
                format!(" @{}", s(map(l.mapping_id).filename))
            };
            match l.line.first() {
                Some(line) => {
                    let f = func(line.function_id);
                    format!("{} {}:{}{m}", s(f.name), s(f.filename), line.line)
                }
                None => format!("{:#x}{m}", l.address),
            }
        };
        let got: Vec<String> = p
            .sample
            .iter()
            .map(|smp| {
                let labels: Vec<String> = smp
                    .label
                    .iter()
                    .map(|l| match l.str {
                        0 => format!("{}={}", s(l.key), l.num),
                        v => format!("{}={}", s(l.key), s(v)),
                    })
                    .collect();
                let frames: Vec<String> = smp.location_id.iter().map(|&id| name(id)).collect();
                format!(
                    "{:?} {} | {}",
                    smp.value,
                    labels.join(","),
                    frames.join(" < ")
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                "[1, 3, 0, 0, 0, 4096, 12288, 0, 0, 0] pid=42,comm=prog,region=0x1000 | \
                 fill prog.c:32 @/usr/bin/prog < main prog.c:16 @/usr/bin/prog",
                "[5, 0, 0, 0, 0, 20480, 0, 0, 0, 0] pid=42,comm=prog,region=0x1000 | \
                 scan prog.c:48 @/usr/bin/prog < main prog.c:16 @/usr/bin/prog",
                "[0, 2, 0, 0, 0, 0, 8192, 0, 0, 0] pid=42,comm=prog,region=0x2000 | \
                 clear_user :0 @[kernel.kallsyms] < ksys_read :0 @[kernel.kallsyms] < \
                 0x7f0000001234 @/usr/lib/libc.so.6 < load prog.c:64 @/usr/bin/prog < \
                 main prog.c:16 @/usr/bin/prog",
                "[0, 4, 0, 1, 0, 0, 16384, 0, 4096, 0] pid=43,comm=prog,region=0x1000 | \
                 fill prog.c:32 @/usr/bin/prog < main prog.c:16 @/usr/bin/prog",
            ]
        );
        // One location per distinct frame, one function per name.
        assert_eq!(p.location.len(), 7);
        assert_eq!(p.function.len(), 6);
    }

    #[test]
    fn mappings_let_pprof_find_each_file_offset() {
        let p = decoded();
        let s = |i: i64| p.string_table[i as usize].clone();
        let maps: Vec<String> = p
            .mapping
            .iter()
            .map(|m| {
                format!(
                    "{} {:#x}-{:#x}@{:#x} build_id={:?} functions={}",
                    s(m.filename),
                    m.memory_start,
                    m.memory_limit,
                    m.file_offset,
                    s(m.build_id),
                    m.has_functions
                )
            })
            .collect();
        // The program first (the outermost frame's object).
        assert_eq!(
            maps,
            [
                r#"/usr/bin/prog 0x401010-0x401341@0x1010 build_id="abcd" functions=true"#,
                r#"/usr/lib/libc.so.6 0x7f0000001234-0x7f0000001235@0x1234 build_id="" functions=false"#,
                r#"[kernel.kallsyms] 0xffffffff81000010-0xffffffff81000021@0x0 build_id="" functions=true"#,
            ]
        );
        for l in &p.location {
            let Some(m) = p.mapping.get((l.mapping_id as usize).wrapping_sub(1)) else {
                continue;
            };
            assert!((m.memory_start..m.memory_limit).contains(&l.address));
        }
    }
}
