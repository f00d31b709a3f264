//! `tamalloc report`: the picture of lazy zeroing, from a JSON lines trace.
//!
//! Per process, over time (seconds since the trace started): bytes reserved in tamalloc
//! regions (replayed from the region, unmap, mremap, fork, exec and exit records with the
//! tracer's own [`Aggregator`]), resident bytes (the kernel's tamalloc resident count from
//! `stats` records when it has one, else the pages made resident by first-touch writes) and
//! VmRSS, above the pages first touched, cumulative, by kind (from the `fault` records, or
//! from the `stats` records' counters when faults were not streamed). Drawn as SVG with
//! plotters; text is emitted as SVG `<text>`, so no font is needed.

use std::{
    collections::BTreeMap,
    io::BufRead,
    path::{Path, PathBuf},
};

use plotters::{
    coord::Shift,
    prelude::{
        ChartBuilder, DrawingArea, IntoDrawingArea as _, LineSeries, PathElement, SVGBackend,
        SeriesLabelPosition,
    },
    style::{BLACK, Color as _, RGBColor, WHITE},
};
use tamalloc_common::trace::FaultKind;

use crate::tracer::{aggregate::Aggregator, decode::TraceEvent, record::Record};

/// Why a report could not be made. Each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a trace record ({why})")]
    Parse {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{0} has no traced process with tamalloc regions")]
    Empty(PathBuf),
    #[error("pid {pid} is not in the trace (its processes: {known})")]
    NoSuchPid { pid: u32, known: String },
    #[error("drawing the report: {0}")]
    Draw(String),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Fault points closer together than this are merged (the curve keeps its shape, the
/// memory stays bounded by the trace's duration rather than its number of faults).
const FAULT_RESOLUTION_NS: u64 = 10_000_000;
/// At most this many points per drawn series.
const MAX_POINTS: usize = 2000;
const PAGE_KIB: u64 = 4;

/// One `stats` sample.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    ts_ns: u64,
    vm_rss_kib: u64,
    tamalloc_resident_kib: u64,
    faults: [u64; 5],
}

/// What the report knows of one process.
#[derive(Clone, Debug, Default)]
pub struct Proc {
    pub comm: String,
    /// Regions created in this process.
    pub regions: u64,
    /// The largest reserved size, in bytes.
    pub peak_reserved: u64,
    /// Reserved bytes over time (a step function).
    reserved: Vec<(u64, u64)>,
    samples: Vec<Sample>,
    /// Cumulative streamed faults by kind: (ts_ns, count) points.
    faults: [Vec<(u64, u64)>; 5],
    /// Final counts (summary record, else the last sample or the streamed faults).
    pub totals: [u64; 5],
}

impl Proc {
    fn interesting(&self) -> bool {
        self.regions > 0
            || self.peak_reserved > 0
            || self.totals.iter().any(|&n| n > 0)
            || self.faults.iter().any(|f| !f.is_empty())
    }

    /// Whether the kernel reported tamalloc resident sizes (syscall 555), else they are
    /// derived from the first-touch writes.
    fn kernel_resident(&self) -> bool {
        self.samples.iter().any(|s| s.tamalloc_resident_kib > 0)
    }

    fn streamed(&self) -> bool {
        self.faults.iter().any(|f| !f.is_empty())
    }
}

/// A trace, reduced to what the report draws.
#[derive(Debug, Default)]
pub struct Trace {
    /// The first timestamp in the trace: time 0 of the report.
    pub t0_ns: u64,
    pub procs: BTreeMap<u32, Proc>,
    pub stats_source: String,
}

impl Trace {
    /// Reads a JSON lines trace. Records of types this version does not know are skipped.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let read = |source| ReportError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut t = Trace::default();
        let mut agg = Aggregator::new();
        let mut first: Option<u64> = None;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(read)?;
            if line.trim().is_empty() {
                continue;
            }
            let parse = |why: String| ReportError::Parse {
                path: path.to_owned(),
                line: i + 1,
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
            if let Some(ts) = r.ts_ns() {
                first = Some(first.map_or(ts, |f| f.min(ts)));
            }
            t.add(&r, &mut agg);
        }
        t.t0_ns = first.unwrap_or(0);
        for p in t.procs.values_mut() {
            if p.totals.iter().all(|&n| n == 0) {
                if let Some(s) = p.samples.last() {
                    p.totals = s.faults;
                }
                for (k, f) in p.faults.iter().enumerate() {
                    p.totals[k] = p.totals[k].max(f.last().map_or(0, |l| l.1));
                }
            }
        }
        t.procs.retain(|_, p| p.interesting());
        if t.procs.is_empty() {
            return Err(ReportError::Empty(path.to_owned()));
        }
        Ok(t)
    }

    fn add(&mut self, r: &Record, agg: &mut Aggregator) {
        if let Some(ev) = r.to_event() {
            agg.apply(&ev);
        }
        match r {
            Record::Meta { stats_source, .. } => self.stats_source = stats_source.clone(),
            Record::Event(TraceEvent::Region { ts_ns, pid, .. }) => {
                self.procs.entry(*pid).or_default().regions += 1;
                self.reserved_now(*ts_ns, *pid, agg);
            }
            Record::Event(TraceEvent::Unmap { ts_ns, pid, .. })
            | Record::Event(TraceEvent::Remap { ts_ns, pid, .. })
            | Record::Event(TraceEvent::Exec { ts_ns, pid })
            | Record::Event(TraceEvent::Exit { ts_ns, pid }) => {
                if self.procs.contains_key(pid) {
                    self.reserved_now(*ts_ns, *pid, agg);
                }
            }
            Record::Event(TraceEvent::Fork { ts_ns, pid, child }) => {
                if self.procs.contains_key(pid) {
                    let comm = self.procs[pid].comm.clone();
                    self.procs.entry(*child).or_default().comm = comm;
                    self.reserved_now(*ts_ns, *child, agg);
                }
            }
            Record::Event(TraceEvent::Fault {
                ts_ns, pid, kind, ..
            }) => {
                let points = &mut self.procs.entry(*pid).or_default().faults[*kind as usize];
                let n = points.last().map_or(0, |p| p.1) + 1;
                match points.last_mut() {
                    Some(last) if ts_ns.saturating_sub(last.0) < FAULT_RESOLUTION_NS => last.1 = n,
                    _ => points.push((*ts_ns, n)),
                }
            }
            Record::Stats {
                ts_ns,
                pid,
                comm,
                vm_rss_kib,
                tamalloc_resident_kib,
                read_zero,
                write_zero,
                cow_zero,
                cow,
                other,
                ..
            } => {
                let p = self.procs.entry(*pid).or_default();
                if !comm.is_empty() {
                    p.comm = comm.clone();
                }
                p.samples.push(Sample {
                    ts_ns: *ts_ns,
                    vm_rss_kib: *vm_rss_kib,
                    tamalloc_resident_kib: *tamalloc_resident_kib,
                    faults: [*read_zero, *write_zero, *cow_zero, *cow, *other],
                });
            }
            Record::Summary {
                pid,
                comm,
                read_zero,
                write_zero,
                cow_zero,
                cow,
                other,
                ..
            } => {
                let p = self.procs.entry(*pid).or_default();
                if !comm.is_empty() {
                    p.comm = comm.clone();
                }
                p.totals = [*read_zero, *write_zero, *cow_zero, *cow, *other];
            }
            Record::Global { .. } | Record::Drops { .. } => {}
        }
    }

    fn reserved_now(&mut self, ts_ns: u64, pid: u32, agg: &Aggregator) {
        let bytes = agg.get(pid).map_or(0, |s| s.regions.values().sum::<u64>());
        let p = self.procs.entry(pid).or_default();
        p.peak_reserved = p.peak_reserved.max(bytes);
        if p.reserved.last().is_none_or(|l| l.1 != bytes) {
            p.reserved.push((ts_ns, bytes));
        }
    }

    fn secs(&self, ts_ns: u64) -> f64 {
        ts_ns.saturating_sub(self.t0_ns) as f64 / 1e9
    }

    /// The pids the report shows: `pid` alone, or all.
    pub fn select(&self, pid: Option<u32>) -> Result<Vec<u32>, ReportError> {
        match pid {
            None => Ok(self.procs.keys().copied().collect()),
            Some(p) if self.procs.contains_key(&p) => Ok(vec![p]),
            Some(p) => Err(ReportError::NoSuchPid {
                pid: p,
                known: self
                    .procs
                    .keys()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The time of the last point of a process's series, in seconds.
    fn end_secs(&self, p: &Proc) -> f64 {
        let last = [
            p.reserved.last().map(|x| x.0),
            p.samples.last().map(|s| s.ts_ns),
            p.faults.iter().filter_map(|f| f.last()).map(|x| x.0).max(),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(self.t0_ns);
        self.secs(last)
    }
}

/// A drawn line: its legend label, colour and points (seconds, value).
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    /// Stroke width: lines that others may cover exactly (read_zero under cow_zero with
    /// read-then-write) are drawn wider, first.
    pub width: u32,
    pub points: Vec<(f64, f64)>,
}

pub const RESERVED: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
pub const RESIDENT: RGBColor = RGBColor(0xd6, 0x27, 0x28);
pub const VM_RSS: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);
/// Colours of the fault kinds, in [`FaultKind::ALL`] order.
pub const KIND_COLORS: [RGBColor; 5] = [
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x17, 0xbe, 0xcf),
];

const MIB: f64 = 1024.0 * 1024.0;

/// A step function through `points`, ending at `end`, thinned to [`MAX_POINTS`].
fn steps(points: &[(f64, f64)], end: f64) -> Vec<(f64, f64)> {
    let stride = points.len().div_ceil(MAX_POINTS / 2).max(1);
    let mut out = Vec::with_capacity(points.len().min(MAX_POINTS) + 2);
    let mut prev: Option<f64> = None;
    let last = points.len().saturating_sub(1);
    for (i, &(x, y)) in points.iter().enumerate() {
        if i % stride != 0 && i != last {
            continue;
        }
        if let Some(py) = prev {
            out.push((x, py));
        }
        out.push((x, y));
        prev = Some(y);
    }
    match out.last() {
        Some(&(x, y)) if end > x => out.push((end, y)),
        Some(_) => {}
        // Nothing happened: a line at zero.
        None => out.extend([(0.0, 0.0), (end, 0.0)]),
    }
    out
}

/// The two charts of one process: memory (MiB) and pages first touched by kind.
pub fn series(t: &Trace, pid: u32) -> (Vec<Series>, Vec<Series>) {
    let Some(p) = t.procs.get(&pid) else {
        return (Vec::new(), Vec::new());
    };
    let end = t.end_secs(p);
    let mut mem = Vec::new();
    let reserved: Vec<(f64, f64)> = p
        .reserved
        .iter()
        .map(|&(ts, b)| (t.secs(ts), b as f64 / MIB))
        .collect();
    mem.push(Series {
        label: "reserved (tamalloc regions)".into(),
        color: RESERVED,
        width: 3,
        points: steps(&reserved, end),
    });
    // Cumulative faults by kind, as (seconds, pages).
    let kinds: Vec<Vec<(f64, f64)>> = (0..5)
        .map(|k| {
            if p.streamed() {
                p.faults[k]
                    .iter()
                    .map(|&(ts, n)| (t.secs(ts), n as f64))
                    .collect()
            } else {
                p.samples
                    .iter()
                    .map(|s| (t.secs(s.ts_ns), s.faults[k] as f64))
                    .collect()
            }
        })
        .collect();
    if p.kernel_resident() {
        let pts: Vec<(f64, f64)> = p
            .samples
            .iter()
            .map(|s| {
                (
                    t.secs(s.ts_ns),
                    (s.tamalloc_resident_kib * 1024) as f64 / MIB,
                )
            })
            .collect();
        mem.push(Series {
            label: "resident (tamalloc regions)".into(),
            color: RESIDENT,
            width: 2,
            points: steps(&pts, end),
        });
    } else {
        // Pages made resident by first-touch writes: write_zero and cow_zero, merged in time.
        let mut pts: Vec<(f64, f64)> = Vec::new();
        let (w, c) = (
            &kinds[FaultKind::WriteZero as usize],
            &kinds[FaultKind::CowZero as usize],
        );
        let (mut i, mut j, mut nw, mut nc) = (0, 0, 0.0, 0.0);
        while i < w.len() || j < c.len() {
            let take_w = j >= c.len() || (i < w.len() && w[i].0 <= c[j].0);
            let x = if take_w {
                nw = w[i].1;
                i += 1;
                w[i - 1].0
            } else {
                nc = c[j].1;
                j += 1;
                c[j - 1].0
            };
            pts.push((x, (nw + nc) * (PAGE_KIB * 1024) as f64 / MIB));
        }
        mem.push(Series {
            label: "resident (write_zero + cow_zero pages)".into(),
            color: RESIDENT,
            width: 2,
            points: steps(&pts, end),
        });
    }
    if !p.samples.is_empty() {
        let pts: Vec<(f64, f64)> = p
            .samples
            .iter()
            .map(|s| (t.secs(s.ts_ns), (s.vm_rss_kib * 1024) as f64 / MIB))
            .collect();
        mem.push(Series {
            label: "VmRSS".into(),
            color: VM_RSS,
            width: 2,
            points: steps(&pts, end),
        });
    }
    let mut pages = Vec::new();
    for (k, kind) in FaultKind::ALL.iter().enumerate() {
        let shown = p.totals[k] > 0 || kinds[k].iter().any(|x| x.1 > 0.0);
        // write_zero is always drawn, so the chart has a line even with no faults.
        if shown || *kind == FaultKind::WriteZero {
            pages.push(Series {
                label: kind.name().into(),
                color: KIND_COLORS[k],
                width: if *kind == FaultKind::ReadZero { 5 } else { 2 },
                points: steps(&kinds[k], end),
            });
        }
    }
    (mem, pages)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn draw_chart(
    area: &Area<'_>,
    caption: &str,
    y_desc: &str,
    x_max: f64,
    lines: &[Series],
) -> Result<(), ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Draw(e.to_string());
    let y_max = lines
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .y_label_formatter(&|v| {
            if y_max >= 20.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        })
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;
    for s in lines {
        let (color, width) = (s.color, s.width);
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(width),
            ))
            .map_err(|e| err(&e))?
            .label(s.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

/// Size of one process's panel, in pixels.
const PANEL: (u32, u32) = (960, 640);

/// The SVG of the report for `pids`.
pub fn render_svg(t: &Trace, pids: &[u32]) -> Result<String, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Draw(e.to_string());
    let mut svg = String::new();
    {
        let n = u32::try_from(pids.len().max(1)).unwrap_or(u32::MAX);
        let root = SVGBackend::with_string(&mut svg, (PANEL.0, PANEL.1.saturating_mul(n)))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let panels = root.split_evenly((pids.len().max(1), 1));
        for (area, &pid) in panels.iter().zip(pids) {
            let Some(p) = t.procs.get(&pid) else { continue };
            let (mem, pages) = series(t, pid);
            let x_max = t.end_secs(p).max(0.001) * 1.02;
            let (top, bottom) = area.split_vertically(PANEL.1 / 2);
            let comm = if p.comm.is_empty() { "?" } else { &p.comm };
            let regions = if p.regions == 1 { "region" } else { "regions" };
            let caption = format!(
                "pid {pid} ({comm}): {} {regions}, {:.1} MiB reserved at most",
                p.regions,
                p.peak_reserved as f64 / MIB
            );
            draw_chart(&top, &caption, "MiB", x_max, &mem)?;
            draw_chart(
                &bottom,
                "pages first touched, cumulative, by kind",
                "pages",
                x_max,
                &pages,
            )?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// A few lines per process: what the picture shows, in numbers.
pub fn text_summary(t: &Trace, pids: &[u32]) -> String {
    let mut out = String::new();
    for pid in pids {
        let Some(p) = t.procs.get(pid) else { continue };
        let kinds: Vec<String> = FaultKind::ALL
            .iter()
            .zip(p.totals)
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        out.push_str(&format!(
            "pid {pid} ({}): {} region(s), {:.1} MiB reserved at most; pages first touched: {}\n",
            p.comm,
            p.regions,
            p.peak_reserved as f64 / MIB,
            kinds.join(", ")
        ));
    }
    out
}

/// Writes `svg` to `path`.
pub fn write(path: &Path, svg: &str) -> Result<(), ReportError> {
    std::fs::write(path, svg).map_err(|source| ReportError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_hold_each_value_until_the_next() {
        let s = steps(&[(0.0, 1.0), (1.0, 3.0)], 2.0);
        assert_eq!(s, vec![(0.0, 1.0), (1.0, 1.0), (1.0, 3.0), (2.0, 3.0)]);
        let many: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, i as f64)).collect();
        let s = steps(&many, 0.0);
        assert!(s.len() <= MAX_POINTS + 2, "{}", s.len());
        assert_eq!(s.last(), Some(&(99_999.0, 99_999.0)));
    }
}
