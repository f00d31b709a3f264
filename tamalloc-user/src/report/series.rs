//! The lines the report draws, from a loaded [`Trace`]: memory in MiB (reserved, resident,
//! VmRSS) and pages first touched, cumulative, by kind; as steps, thinned to a bounded size.

use plotters::style::RGBColor;
use tamalloc_common::trace::{FAULT_KINDS, FaultKind};

use super::load::{Proc, Trace};

/// At most this many points per drawn series.
const MAX_POINTS: usize = 2000;
const PAGE_KIB: u64 = 4;
pub(super) const MIB: f64 = 1024.0 * 1024.0;

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
pub const KIND_COLORS: [RGBColor; FAULT_KINDS] = [
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x17, 0xbe, 0xcf),
];

impl Trace {
    /// Seconds since the start of the trace.
    fn secs(&self, ts_ns: u64) -> f64 {
        ts_ns.saturating_sub(self.t0_ns) as f64 / 1e9
    }

    /// The time of the last point of a process's series, in seconds.
    pub(super) fn end_secs(&self, p: &Proc) -> f64 {
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
    let kinds: Vec<Vec<(f64, f64)>> = FaultKind::ALL
        .iter()
        .map(|&kind| {
            let k = kind as usize;
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
