//! Lays the live view out on a ratatui frame:
//!
//! ```text
//! header: time, stats source, PAUSED, where the command's output goes
//! processes: the table, sorted, the selected row marked
//! regions of the selected process    | memory (MiB): reserved, resident, VmRSS over time
//!                                    | first touches/s, one sparkline per kind
//! global line
//! drops line
//! keys
//! ```
//!
//! Columns that do not fit go, the least telling first, rather than being cut.

use std::{cmp::Reverse, collections::HashSet};

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    symbols,
    text::{Line, Span},
    widgets::{
        Axis, Block, Cell, Chart, Dataset, GraphType, HighlightSpacing, LegendPosition, Paragraph,
        Row as TableRow, Sparkline, Table, TableState,
    },
};
use tamalloc_common::trace::{FAULT_KINDS, FaultKind, PAGE_SIZE};

use super::state::{Sample, State};
use crate::{
    output::terminal::{self, KIND_WIDTHS, kib},
    tracer::Row,
};

/// A table column: its header, its width, and how soon it goes when the table is too
/// narrow (the highest first, from the right; 0 never).
struct Col {
    name: &'static str,
    width: u16,
    drop: u8,
}

const fn col(name: &'static str, width: u16, drop: u8) -> Col {
    Col { name, width, drop }
}

/// How soon each fault kind's column goes: the rare kinds first.
const KIND_DROP: [u8; FAULT_KINDS] = [1, 0, 1, 3, 3];

/// The process table's columns: today's plain table's.
fn process_cols() -> Vec<Col> {
    let mut cols = vec![
        col("PID", 7, 0),
        col("COMM", 16, 0),
        col("REGIONS", 7, 2),
        col("RESERVED", 8, 0),
    ];
    cols.extend(kind_cols());
    cols.extend([
        col("VmRSS", 8, 0),
        col("dRSS", 8, 2),
        col("OOM", 4, 4),
        col("RES‰", 5, 4),
    ]);
    cols
}

fn kind_cols() -> impl Iterator<Item = Col> {
    FaultKind::ALL
        .iter()
        .zip(KIND_WIDTHS)
        .zip(KIND_DROP)
        .map(|((k, w), d)| Col {
            name: kind_header(*k),
            width: w as u16,
            drop: d,
        })
}

fn kind_header(k: FaultKind) -> &'static str {
    match k {
        FaultKind::ReadZero => "READ_ZERO",
        FaultKind::WriteZero => "WRITE_ZERO",
        FaultKind::CowZero => "COW_ZERO",
        FaultKind::Cow => "COW",
        FaultKind::Other => "OTHER",
    }
}

fn region_cols() -> Vec<Col> {
    let mut cols = vec![
        col("REGION", 14, 0),
        col("MADE_BY", 8, 1),
        col("LEN", 8, 0),
        col("TOUCHED", 7, 0),
    ];
    cols.extend(kind_cols());
    cols.push(col("STATE", 5, 2));
    cols
}

/// The columns that fit in `width` (one space between columns), in order.
fn fit(cols: &[Col], width: u16) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..cols.len()).collect();
    let need = |keep: &[usize]| -> u16 { keep.iter().map(|&i| cols[i].width + 1).sum() };
    while need(&keep) > width.saturating_add(1) {
        let Some(pos) = (0..keep.len())
            .filter(|&p| cols[keep[p]].drop > 0)
            .max_by_key(|&p| (cols[keep[p]].drop, p))
        else {
            break;
        };
        keep.remove(pos);
    }
    keep
}

/// A table of `cells` (each row has one string per column of `cols`), with the columns
/// that fit in `width`; numbers right-aligned as in the plain table.
fn table(cols: &[Col], width: u16, cells: Vec<(Vec<String>, Style)>) -> Table<'static> {
    let keep = fit(cols, width);
    let align = |i: usize, s: String| -> Cell<'static> {
        let w = usize::from(cols[i].width);
        // Names read left to right, numbers line up on the right.
        if matches!(cols[i].name, "COMM" | "MADE_BY" | "REGION" | "STATE") {
            Cell::from(format!("{s:<w$}"))
        } else {
            Cell::from(format!("{s:>w$}"))
        }
    };
    let header = TableRow::new(keep.iter().map(|&i| align(i, cols[i].name.to_owned())))
        .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = cells.into_iter().map(|(row, style)| {
        TableRow::new(keep.iter().map(|&i| align(i, row[i].clone()))).style(style)
    });
    let widths: Vec<Constraint> = keep
        .iter()
        .map(|&i| Constraint::Length(cols[i].width))
        .collect();
    Table::new(rows, widths).header(header)
}

fn process_fields(r: &Row) -> Vec<String> {
    let p = &r.state;
    let mut f = vec![
        r.pid.to_string(),
        terminal::truncate(&p.comm, 16).to_owned(),
        p.counters.regions.to_string(),
        kib(p.reserved_bytes() / 1024),
    ];
    f.extend(FaultKind::ALL.iter().map(|&k| p.faults(k).to_string()));
    f.extend(terminal::stat_fields(r));
    f
}

const HIGHLIGHT: &str = "> ";

fn process_table(st: &State, width: u16) -> Table<'static> {
    let rows = st.rows();
    let cells = rows
        .iter()
        .map(|r| {
            let style = if r.state.exited {
                Style::new().fg(Color::DarkGray)
            } else {
                Style::new()
            };
            (process_fields(r), style)
        })
        .collect();
    let order = match (st.sort.name(), st.reverse) {
        (name, false) => format!("sort: {name}"),
        (name, true) => format!("sort: {name}, reversed"),
    };
    let inner = width.saturating_sub(2 + HIGHLIGHT.len() as u16);
    table(&process_cols(), inner, cells)
        .block(Block::bordered().title(format!(" processes ({}), {order} ", rows.len())))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol(HIGHLIGHT)
        .highlight_spacing(HighlightSpacing::Always)
}

/// The selected process's regions: live ones first, then those with the most pages first
/// touched.
fn regions_table(r: &Row, width: u16) -> Table<'static> {
    let p = &r.state;
    let live: HashSet<u64> = p.region_ids.values().copied().collect();
    let mut regions: Vec<_> = p
        .by_region
        .iter()
        .map(|(&id, f)| (live.contains(&id), id, f))
        .chain(p.past_regions.iter().map(|(id, f)| (false, *id, f)))
        .collect();
    regions.sort_by_key(|&(live, id, f)| (Reverse(live), Reverse(f.pages_touched()), id));
    let n_live = regions.iter().filter(|r| r.0).count();
    let cells = regions
        .iter()
        .map(|&(is_live, id, f)| {
            let touched = match f.len / PAGE_SIZE {
                0 => "-".to_owned(),
                pages => format!("{:.1}%", 100.0 * f.pages_touched() as f64 / pages as f64),
            };
            let mut row = vec![
                format!("{id:#x}"),
                f.made_by.name().to_owned(),
                kib(f.len / 1024),
                touched,
            ];
            row.extend(f.faults.iter().map(u64::to_string));
            row.push(if is_live { "live" } else { "gone" }.to_owned());
            let style = if is_live {
                Style::new()
            } else {
                Style::new().fg(Color::DarkGray)
            };
            (row, style)
        })
        .collect();
    let title = format!(
        " pid {} {}: regions {} ({n_live} live) ",
        r.pid,
        p.comm,
        regions.len()
    );
    table(&region_cols(), width.saturating_sub(2), cells).block(Block::bordered().title(title))
}

fn mib(v_kib: u64) -> f64 {
    v_kib as f64 / 1024.0
}

/// Reserved, resident and VmRSS of the selected process over time, in MiB.
fn memory_chart(f: &mut Frame, area: Rect, st: &State, pid: u32) {
    let now = st.now();
    let (samples, kernel): (Vec<Sample>, bool) = match st.history(pid) {
        Some(h) => (h.until(now).copied().collect(), h.kernel_resident()),
        None => (Vec::new(), false),
    };
    let resident_kib = |s: &Sample| {
        if kernel {
            s.kernel_resident_kib
        } else {
            s.touched_resident_kib
        }
    };
    let line = |v: &dyn Fn(&Sample) -> u64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.t, mib(v(s)))).collect()
    };
    let reserved = line(&|s: &Sample| s.reserved_kib);
    let resident = line(&resident_kib);
    let rss = line(&|s: &Sample| s.vm_rss_kib);
    let x0 = samples.first().map_or(0.0, |s| s.t);
    let x1 = now.max(x0 + 1.0);
    let top = [&reserved, &resident, &rss]
        .iter()
        .flat_map(|l| l.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let title = match samples.last() {
        Some(s) => format!(
            " MiB: reserved {:.1}  resident {:.1}  VmRSS {:.1} ",
            mib(s.reserved_kib),
            mib(resident_kib(s)),
            mib(s.vm_rss_kib)
        ),
        None => " MiB: reserved, resident, VmRSS ".to_owned(),
    };
    let chart = Chart::new(vec![
        dataset("reserved", Color::Cyan, &reserved),
        dataset(
            if kernel {
                "resident"
            } else {
                "resident (touched)"
            },
            Color::Red,
            &resident,
        ),
        dataset("VmRSS", Color::Gray, &rss),
    ])
    .block(Block::bordered().title(title))
    .x_axis(
        Axis::default()
            .bounds([x0, x1])
            .labels([format!("{x0:.0}s"), format!("{x1:.0}s")]),
    )
    .y_axis(
        Axis::default()
            .bounds([0.0, top])
            .labels(["0".to_owned(), format!("{top:.0}")]),
    )
    .legend_position(Some(LegendPosition::BottomRight))
    .hidden_legend_constraints((Constraint::Ratio(1, 2), Constraint::Ratio(1, 2)));
    f.render_widget(chart, area);
}

fn dataset<'a>(name: &'static str, color: Color, data: &'a [(f64, f64)]) -> Dataset<'a> {
    Dataset::default()
        .name(name)
        .marker(symbols::Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::new().fg(color))
        .data(data)
}

/// A rate as a short human number per second.
fn per_second(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M/s", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k/s", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k/s", v / 1e3)
    } else {
        format!("{v:.0}/s")
    }
}

const KIND_COLORS: [Color; FAULT_KINDS] = [
    Color::Green,
    Color::Yellow,
    Color::Magenta,
    Color::LightRed,
    Color::LightBlue,
];

/// First touches per second of the selected process, one sparkline per kind, on one scale.
fn touch_rates(f: &mut Frame, area: Rect, st: &State, pid: u32) {
    let block = Block::bordered().title(" first touches/s by kind ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    const LABEL: u16 = 21;
    let room = usize::from(inner.width.saturating_sub(LABEL));
    let samples: Vec<Sample> = st
        .history(pid)
        .map(|h| h.until(st.now()).copied().collect())
        .unwrap_or_default();
    let window = &samples[samples.len().saturating_sub(room)..];
    let top = window
        .iter()
        .flat_map(|s| s.rate)
        .fold(1.0_f64, f64::max)
        .ceil() as u64;
    let rows = Layout::vertical([Constraint::Length(1); FAULT_KINDS]).split(inner);
    for (i, kind) in FaultKind::ALL.iter().enumerate() {
        let Some(&row) = rows.get(i) else { break };
        let [label, spark] =
            Layout::horizontal([Constraint::Length(LABEL), Constraint::Min(0)]).areas(row);
        let now = window.last().map_or(0.0, |s| s.rate[i]);
        f.render_widget(
            Paragraph::new(format!("{:<10} {:>9} ", kind.name(), per_second(now))),
            label,
        );
        let data: Vec<u64> = window.iter().map(|s| s.rate[i].round() as u64).collect();
        f.render_widget(
            Sparkline::default()
                .data(data)
                .max(top)
                .style(Style::new().fg(KIND_COLORS[i])),
            spark,
        );
    }
}

/// The keys, as the last line shows them.
pub const KEYS: [(&str, &str); 6] = [
    ("q", "quit"),
    ("s", "sort"),
    ("r", "reverse"),
    ("p", "pause"),
    ("Up/Down", "select"),
    ("Ctrl-C", "stop"),
];

fn keys_line(st: &State) -> Line<'static> {
    let mut spans = Vec::new();
    for (key, what) in KEYS {
        let what = match (key, st.paused) {
            ("p", true) => "resume",
            _ => what,
        };
        spans.push(Span::styled(
            format!(" {key}"),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(format!(" {what} ")));
    }
    Line::from(spans)
}

fn header_line(st: &State) -> Line<'static> {
    let mut spans = Vec::new();
    if let Some(snap) = st.shown() {
        spans.push(Span::styled(
            terminal::header(snap),
            Style::new().add_modifier(Modifier::BOLD),
        ));
    }
    if st.paused {
        spans.push(Span::raw("  "));
        spans.push(Span::styled(
            " PAUSED ",
            Style::new().fg(Color::Black).bg(Color::Yellow),
        ));
    }
    if st.quitting {
        spans.push(Span::raw("  stopping..."));
    }
    if let Some(path) = &st.command_output {
        spans.push(Span::raw(format!("  command output: {path}")));
    }
    Line::from(spans)
}

/// Draws the whole view; `table_state` keeps the process table's scroll offset between frames.
pub fn draw(f: &mut Frame, st: &State, table_state: &mut TableState) {
    let area = f.area();
    let Some(snap) = st.shown() else {
        f.render_widget(
            Paragraph::new("tamalloc trace: waiting for the first refresh"),
            area,
        );
        return;
    };
    let n = u16::try_from(snap.rows.len()).unwrap_or(u16::MAX);
    let table_h = n.saturating_add(3).min((area.height * 2 / 5).max(4)).max(4);
    let [head, procs, detail, global, drops, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_h),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(header_line(st)), head);
    table_state.select(st.selected_index());
    f.render_stateful_widget(process_table(st, procs.width), procs, table_state);
    match st.selected() {
        Some(r) => {
            let [left, right] =
                Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)])
                    .areas(detail);
            let [chart, rates] = Layout::vertical([
                Constraint::Min(0),
                Constraint::Length(FAULT_KINDS as u16 + 2),
            ])
            .areas(right);
            f.render_widget(regions_table(r, left.width), left);
            memory_chart(f, chart, st, r.pid);
            touch_rates(f, rates, st, r.pid);
        }
        None => f.render_widget(
            Paragraph::new(" no followed process has regions yet")
                .block(Block::bordered().title(" regions ")),
            detail,
        ),
    }
    let global_text = terminal::global_line(snap).unwrap_or_else(|| "global: -".to_owned());
    f.render_widget(Paragraph::new(global_text), global);
    let drops_style = if snap.drops.total() > 0 {
        Style::new().fg(Color::Red)
    } else {
        Style::new()
    };
    f.render_widget(
        Paragraph::new(terminal::drops_line(snap)).style(drops_style),
        drops,
    );
    f.render_widget(Paragraph::new(keys_line(st)), keys);
}

#[cfg(test)]
mod tests;
