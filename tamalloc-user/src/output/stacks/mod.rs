//! ⑤ Where the pages came from (`--stacks`): the `stack` records of a trace, merged in a
//! [`StackSet`], written as Brendan Gregg's folded stacks ([`folded`]), a flame graph SVG
//! ([`flamegraph`], drawn from the folded lines by `inferno`) and a gzipped pprof profile
//! ([`pprof`]). [`StackFiles`] is the [`Sink`] that keeps only the stack records of a session
//! (or of a trace file `tamalloc report` reads) and writes the files at its end.

pub mod flamegraph;
pub mod folded;
pub mod pprof;
mod proto;

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use tamalloc_common::trace::{FAULT_KINDS, PAGE_SIZE};

use crate::tracer::{
    Sink,
    decode::TraceEvent,
    record::{Record, StackFrame},
};

/// The pages of one call path in one region of one process, by kind
/// (`FaultKind::ALL` order); frames leaf first, as in the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub pid: u32,
    pub comm: String,
    pub region: u64,
    pub pages: [u64; FAULT_KINDS],
    pub frames: Vec<StackFrame>,
}

impl Stack {
    /// The bytes of `pages`, by kind.
    pub fn bytes(&self) -> [u64; FAULT_KINDS] {
        self.pages.map(|p| p.saturating_mul(PAGE_SIZE))
    }
}

/// Every field of a frame, in an order, so equal frames merge and output is deterministic.
type FrameKey = (
    u64,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<u64>,
    Option<String>,
    Option<u32>,
);

fn frame_key(f: &StackFrame) -> FrameKey {
    (
        f.addr,
        f.kernel,
        f.function.clone(),
        f.module.clone(),
        f.build_id.clone(),
        f.file_offset,
        f.file.clone(),
        f.line,
    )
}

/// A stack's identity: process, command, region and frames.
type StackKey = (u32, String, u64, Vec<FrameKey>);

/// The `stack` records of a trace; records with the same process, command, region and
/// frames are one stack whose pages add up.
#[derive(Debug, Default)]
pub struct StackSet {
    stacks: Vec<Stack>,
    index: BTreeMap<StackKey, usize>,
}

impl StackSet {
    /// Adds `r` when it is a `stack` record; whether it was.
    pub fn add(&mut self, r: &Record) -> bool {
        let (
            Record::Stack {
                pid,
                comm,
                region,
                frames,
                ..
            },
            Some(pages),
        ) = (r, r.faults_by_kind())
        else {
            return false;
        };
        let key = (
            *pid,
            comm.clone(),
            *region,
            frames.iter().map(frame_key).collect(),
        );
        match self.index.get(&key) {
            Some(&i) => {
                let s = &mut self.stacks[i];
                for (sum, n) in s.pages.iter_mut().zip(pages) {
                    *sum = sum.saturating_add(n);
                }
            }
            None => {
                self.index.insert(key, self.stacks.len());
                self.stacks.push(Stack {
                    pid: *pid,
                    comm: comm.clone(),
                    region: *region,
                    pages,
                    frames: frames.clone(),
                });
            }
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }

    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    /// Every stack, ordered by process, command, region and frames (not arrival), so the
    /// same records give the same files.
    pub fn iter(&self) -> impl Iterator<Item = &Stack> {
        self.index.values().map(|&i| &self.stacks[i])
    }
}

impl FromIterator<Record> for StackSet {
    fn from_iter<I: IntoIterator<Item = Record>>(records: I) -> Self {
        let mut set = Self::default();
        for r in records {
            set.add(&r);
        }
        set
    }
}

/// The files `--folded`, `--flamegraph` and `--pprof` name (any of them).
#[derive(Clone, Debug, Default)]
pub struct StackTargets {
    pub folded: Option<PathBuf>,
    pub flamegraph: Option<PathBuf>,
    pub pprof: Option<PathBuf>,
}

impl StackTargets {
    pub fn is_empty(&self) -> bool {
        self.folded.is_none() && self.flamegraph.is_none() && self.pprof.is_none()
    }
}

#[derive(Clone, Copy, Debug)]
enum StackFormat {
    Folded,
    Flamegraph,
    Pprof,
}

impl StackFormat {
    fn what(self) -> &'static str {
        match self {
            StackFormat::Folded => "the folded stacks",
            StackFormat::Flamegraph => "the flame graph",
            StackFormat::Pprof => "the pprof profile",
        }
    }
}

/// A [`Sink`] that keeps the `stack` records and, at [`Sink::finish`] (also after Ctrl-C),
/// writes them to every target. The files are created at once, so a path that cannot be
/// written fails before anything is traced.
pub struct StackFiles {
    files: Vec<(StackFormat, PathBuf, File)>,
    set: StackSet,
}

impl StackFiles {
    /// Creates the targets' files; `set` holds stacks already read (`tamalloc report`), or
    /// is empty for a live session. The error names the path.
    pub fn create(targets: &StackTargets, set: StackSet) -> io::Result<Self> {
        let mut files = Vec::new();
        for (format, path) in [
            (StackFormat::Folded, &targets.folded),
            (StackFormat::Flamegraph, &targets.flamegraph),
            (StackFormat::Pprof, &targets.pprof),
        ] {
            let Some(path) = path else { continue };
            let file = File::create(path).map_err(|e| named(format, path, e))?;
            files.push((format, path.clone(), file));
        }
        Ok(Self { files, set })
    }
}

/// `e`, saying which file it was about.
fn named(format: StackFormat, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("cannot write {} to {}: {e}", format.what(), path.display()),
    )
}

impl Sink for StackFiles {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        self.set.add(r);
        Ok(())
    }

    /// Events carry no stacks: not even decoded into a record.
    fn event_bytes(&mut self, _raw: &[u8], _ev: &TraceEvent) -> io::Result<()> {
        Ok(())
    }

    /// Writes every file, even after one fails; the first error.
    fn finish(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        for (format, path, file) in &self.files {
            let mut out = BufWriter::new(file);
            let written = match format {
                StackFormat::Folded => folded::write(&self.set, &mut out),
                StackFormat::Flamegraph => flamegraph::write(&self.set, &mut out),
                StackFormat::Pprof => pprof::write(&self.set, &mut out),
            }
            .and_then(|()| out.flush());
            if let Err(e) = written
                && first.is_ok()
            {
                first = Err(named(*format, path, e));
            }
        }
        first
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn frame(addr: u64, function: &str) -> StackFrame {
        StackFrame {
            addr,
            function: Some(function.to_owned()),
            module: Some("/usr/bin/prog".into()),
            build_id: Some("abcd".into()),
            file_offset: Some(addr - 0x40_0000),
            file: Some("prog.c".into()),
            line: Some(u32::try_from(addr & 0xff).unwrap_or(0)),
            ..StackFrame::default()
        }
    }

    pub(crate) fn stack(pid: u32, region: u64, pages: [u64; 5], frames: Vec<StackFrame>) -> Record {
        Record::stack(pid, "prog".into(), region, pages, frames)
    }

    /// Three call paths of `prog` (pid 42) and one of its kernel-made touches: `main` calls
    /// `fill` (write_zero 3, read_zero 1) and `scan` (read_zero 5) in region 0x1000; `read(2)`
    /// into region 0x2000 from `load` (write_zero 2, kernel frames first); a second pid, 43,
    /// runs `fill` too (write_zero 4, cow 1).
    pub(crate) fn sample() -> Vec<Record> {
        let main = frame(0x40_1010, "main");
        let kernel = |addr, f: &str| StackFrame {
            addr,
            kernel: true,
            function: Some(f.to_owned()),
            ..StackFrame::default()
        };
        vec![
            stack(
                42,
                0x1000,
                [1, 3, 0, 0, 0],
                vec![frame(0x40_1120, "fill"), main.clone()],
            ),
            stack(
                42,
                0x1000,
                [5, 0, 0, 0, 0],
                vec![frame(0x40_1230, "scan"), main.clone()],
            ),
            stack(
                42,
                0x2000,
                [0, 2, 0, 0, 0],
                vec![
                    kernel(0xffff_ffff_8100_0010, "clear_user"),
                    kernel(0xffff_ffff_8100_0020, "ksys_read"),
                    StackFrame {
                        addr: 0x7f00_0000_1234,
                        module: Some("/usr/lib/libc.so.6".into()),
                        file_offset: Some(0x1234),
                        ..StackFrame::default()
                    },
                    frame(0x40_1340, "load"),
                    main.clone(),
                ],
            ),
            stack(
                43,
                0x1000,
                [0, 4, 0, 1, 0],
                vec![frame(0x40_1120, "fill"), main],
            ),
        ]
    }

    #[test]
    fn equal_records_merge_and_order_is_by_identity() {
        let mut records = sample();
        records.push(records[1].clone());
        records.reverse();
        let set: StackSet = records.into_iter().collect();
        assert_eq!(set.len(), 4);
        let got: Vec<(u32, u64, [u64; 5])> =
            set.iter().map(|s| (s.pid, s.region, s.pages)).collect();
        assert_eq!(
            got,
            [
                (42, 0x1000, [1, 3, 0, 0, 0]),
                (42, 0x1000, [10, 0, 0, 0, 0]),
                (42, 0x2000, [0, 2, 0, 0, 0]),
                (43, 0x1000, [0, 4, 0, 1, 0]),
            ]
        );
        assert_eq!(
            set.iter().nth(1).map(Stack::bytes),
            Some([40960, 0, 0, 0, 0])
        );
    }

    #[test]
    fn only_stack_records_are_kept() {
        let mut set = StackSet::default();
        assert!(!set.add(&Record::Event(TraceEvent::Exit { ts_ns: 1, pid: 2 })));
        assert!(set.is_empty());
        assert!(set.add(&sample()[0]));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn the_sink_writes_every_target_at_finish() {
        let dir = std::env::temp_dir().join(format!("tamalloc-stackfiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let targets = StackTargets {
            folded: Some(dir.join("t.folded")),
            flamegraph: Some(dir.join("t.svg")),
            pprof: Some(dir.join("t.pb.gz")),
        };
        let mut sink = StackFiles::create(&targets, StackSet::default()).expect("create");
        for r in sample() {
            sink.record(&r).expect("record");
        }
        sink.finish().expect("finish");
        let folded = std::fs::read_to_string(dir.join("t.folded")).unwrap_or_default();
        assert_eq!(folded.lines().count(), 5, "{folded}");
        let svg = std::fs::read_to_string(dir.join("t.svg")).unwrap_or_default();
        assert!(svg.contains("<svg"), "{svg}");
        let gz = std::fs::read(dir.join("t.pb.gz")).unwrap_or_default();
        assert_eq!(gz.get(..2), Some(&[0x1f, 0x8b][..]), "gzip magic");
        let _ = std::fs::remove_dir_all(&dir);

        let bad = StackTargets {
            pprof: Some("/nonexistent-dir/p.pb.gz".into()),
            ..StackTargets::default()
        };
        let err = StackFiles::create(&bad, StackSet::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("cannot write the pprof profile to /nonexistent-dir/p.pb.gz: "),
            "{err}"
        );
    }
}
