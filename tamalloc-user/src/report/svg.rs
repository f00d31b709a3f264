//! Drawing the [`Series`] of each process as an SVG with plotters: one panel per process,
//! memory above and pages first touched below. Text is emitted as SVG `<text>`, so no font
//! is needed.

use std::path::Path;

use plotters::{
    coord::Shift,
    prelude::{
        ChartBuilder, DrawingArea, IntoDrawingArea as _, LineSeries, PathElement, SVGBackend,
        SeriesLabelPosition,
    },
    style::{BLACK, Color as _, WHITE},
};

use super::{
    ReportError,
    load::Trace,
    series::{MIB, Series, series},
};

/// Size of one process's panel, in pixels.
const PANEL: (u32, u32) = (960, 640);

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

/// Writes `svg` to `path`.
pub fn write(path: &Path, svg: &str) -> Result<(), ReportError> {
    std::fs::write(path, svg).map_err(|source| ReportError::Write {
        path: path.to_owned(),
        source,
    })
}
