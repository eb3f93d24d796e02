//! The chart of a scenario, drawn with `plotters` once per backend: an SVG
//! and a PNG of the same picture.
//!
//! The upper panel is memory usage against time, one line per allocator,
//! with the limit (dashed red) and shrinkalloc's hard limit as a child
//! reported it (dotted grey); a run that ended early ends its line with a
//! cross, a survivor with a dot, and a survivor of a traced scenario shows
//! its usage band after warm-up as two thin dashed lines. A traced scenario
//! (`cache`, `cache-c`) gets a lower panel: each run's hits against the
//! oracle's ideal LRU (`oracle.rs`) over time, slice by slice of its trace.
//! A slice's time is its end as a share of the trace, times the run's
//! span: the scenarios pace their requests evenly over the duration.
//!
//! Text is drawn with DejaVu Sans bundled in the binary (`assets/`,
//! through `ab_glyph`), so the PNG needs no font library on the machine.
//!
//! Invariant: one [`draw`] makes both files, so they cannot differ.

use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::allocator::Allocator;
use crate::oracle::Replay;
use crate::runner::{Outcome, Plan, RunResult};

const WIDTH: u32 = 1200;
/// Height of the usage panel, and of the hits panel under it.
const USAGE_HEIGHT: u32 = 620;
const HITS_HEIGHT: u32 = 320;
const MIB: f64 = (1u64 << 20) as f64;
const FONT: &str = "sans-serif";

fn color(a: Allocator) -> RGBColor {
    match a {
        Allocator::ShrinkAlloc => RGBColor(0x1b, 0x9e, 0x77),
        Allocator::ShrinkAllocNoShrink => RGBColor(0x75, 0x70, 0xb3),
        Allocator::Glibc => RGBColor(0xd9, 0x5f, 0x02),
        Allocator::Jemalloc => RGBColor(0xe7, 0x29, 0x8a),
        Allocator::Mimalloc => RGBColor(0xa6, 0x76, 0x1d),
        Allocator::Tcmalloc => RGBColor(0x1f, 0x78, 0xb4),
    }
}

/// Registers the bundled font once; `plotters` finds it by [`FONT`].
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let ttf: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        if plotters::style::register_font(FONT, FontStyle::Normal, ttf).is_err() {
            eprintln!("shrinkalloc-stress: the bundled font does not load: the charts will have no text");
        }
    });
}

/// Whether the chart has the hits panel: some run has a hits series.
fn has_hits_panel(results: &[RunResult]) -> bool {
    results.iter().any(|r| hits_series(r).len() > 1)
}

fn size(results: &[RunResult]) -> (u32, u32) {
    (WIDTH, USAGE_HEIGHT + if has_hits_panel(results) { HITS_HEIGHT } else { 0 })
}

/// The chart as an SVG document; `usage` names what was measured (the
/// cgroup's usage, or the child's RSS without a cgroup).
pub fn svg(plan: &Plan, results: &[RunResult], usage: &str) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size(results)).into_drawing_area();
        draw(&root, plan, results, usage)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The chart as a PNG file's bytes.
pub fn png(plan: &Plan, results: &[RunResult], usage: &str) -> Result<Vec<u8>, String> {
    let (w, h) = size(results);
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(&root, plan, results, usage)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Draws the whole chart on `root`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plan: &Plan,
    results: &[RunResult],
    usage: &str,
) -> Result<(), String> {
    register_font();
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let limit = plan.limit as f64 / MIB;
    let title = format!("{}: memory usage under a {limit:.0} MiB limit, seed {}", plan.scenario.name, plan.seed);
    let root = root.titled(&title, (FONT, 24)).map_err(e)?;
    let t_max = results.iter().flat_map(|r| r.samples.last()).map(|s| s.t).fold(plan.duration.as_secs_f64(), f64::max);
    if has_hits_panel(results) {
        let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 - HITS_HEIGHT);
        usage_panel(&upper, plan, results, usage, t_max).map_err(e)?;
        hits_panel(&lower, results, t_max).map_err(e)?;
    } else {
        usage_panel(&root, plan, results, usage, t_max).map_err(e)?;
    }
    Ok(())
}

fn usage_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plan: &Plan,
    results: &[RunResult],
    usage: &str,
    t_max: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let limit = plan.limit as f64 / MIB;
    let peak = results.iter().map(|r| r.peak as f64 / MIB).fold(0.0, f64::max);
    let y_max = (limit * 1.12).max(peak * 1.05);
    let x_max = t_max.max(1.0);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since the child started (s)")
        .y_desc(format!("{usage} (MiB)"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(0xe8, 0xe8, 0xe8))
        .draw()?;
    let red = RGBColor(0xcc, 0, 0);
    chart
        .draw_series(DashedLineSeries::new([(0.0, limit), (x_max, limit)], 10, 6, red.stroke_width(2)))?
        .label(format!("limit {limit:.0} MiB"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], red.stroke_width(2)));
    if let Some((hard, _)) = results.iter().find_map(RunResult::limits_in_force) {
        let hard = hard as f64 / MIB;
        let grey = RGBColor(0x88, 0x88, 0x88);
        chart
            .draw_series(DashedLineSeries::new([(0.0, hard), (x_max, hard)], 3, 5, grey.stroke_width(1)))?
            .label(format!("shrinkalloc's hard limit {hard:.0} MiB"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], grey.stroke_width(1)));
    }
    for r in results.iter().filter(|r| !r.samples.is_empty()) {
        let c = color(r.allocator);
        let points = r.samples.iter().map(|s| (s.t, s.usage as f64 / MIB));
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))?
            .label(legend_text(plan, r))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 24, y)], c.stroke_width(3)));
        let Some(last) = r.samples.last() else { continue };
        let end = (last.t, last.usage as f64 / MIB);
        if r.outcome == Outcome::Survived {
            chart.draw_series([Circle::new(end, 5, c.filled())])?;
        } else {
            chart.draw_series([Cross::new(end, 7, c.stroke_width(3))])?;
        }
        if let Some((lo, hi)) = r.band(plan.duration).filter(|_| r.outcome == Outcome::Survived && r.oracle().is_some())
        {
            let (x0, x1) = (r.band_from(plan.duration), plan.duration.as_secs_f64());
            for b in [lo, hi] {
                let y = b as f64 / MIB;
                chart.draw_series(DashedLineSeries::new([(x0, y), (x1, y)], 4, 4, c.stroke_width(1)))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(0xbb, 0xbb, 0xbb))
        .draw()
}

/// What the legend says of a run: how it ended, and for a traced run its
/// hits against the ideal and its band.
fn legend_text(plan: &Plan, r: &RunResult) -> String {
    let mut text = format!("{}: {} at {:.1} s", r.allocator.name(), r.outcome.label(), r.wall.as_secs_f64());
    if let Some(ratio) = r.oracle().and_then(Replay::ratio) {
        text += &format!(", hits {ratio:.2} of ideal");
        if let Some(b) = r.band(plan.duration).filter(|_| r.outcome == Outcome::Survived) {
            text += &format!(", band {}", crate::report::band(b, plan.limit));
        }
    }
    text
}

/// A run's hits against the ideal per slice of its trace, as (seconds,
/// ratio); slices in which the ideal LRU had no hit are left out.
fn hits_series(r: &RunResult) -> Vec<(f64, f64)> {
    let Some(Ok(m)) = &r.replay else { return Vec::new() };
    let span = r.samples.last().map_or(r.wall.as_secs_f64(), |s| s.t);
    let n = m.series.len();
    let mut prev = Replay::default();
    let mut points = Vec::with_capacity(n);
    for (k, cur) in m.series.iter().enumerate() {
        let (hits, ideal) = (cur.hits - prev.hits, cur.ideal - prev.ideal);
        if ideal > 0 {
            points.push(((k + 1) as f64 / n as f64 * span, hits as f64 / ideal as f64));
        }
        prev = *cur;
    }
    points
}

fn hits_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    results: &[RunResult],
    t_max: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let series: Vec<(Allocator, Vec<(f64, f64)>)> =
        results.iter().map(|r| (r.allocator, hits_series(r))).filter(|(_, s)| s.len() > 1).collect();
    let y_max = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).fold(1.2, f64::max);
    let x_max = t_max.max(1.0);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .caption(
            format!(
                "each run's hits against an exact LRU of {}% of the limit, per 1/{} of its trace (colours as above)",
                crate::oracle::BUDGET_PERCENT,
                crate::oracle::SERIES_WINDOWS
            ),
            (FONT, 18),
        )
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("time since the child started (s)")
        .y_desc("hits / ideal")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(WHITE)
        .bold_line_style(RGBColor(0xe8, 0xe8, 0xe8))
        .draw()?;
    let grey = RGBColor(0x66, 0x66, 0x66);
    chart.draw_series(DashedLineSeries::new([(0.0, 1.0), (x_max, 1.0)], 6, 4, grey.stroke_width(1)))?;
    for (a, points) in series {
        let c = color(a);
        chart.draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Measure;
    use crate::scenario::Expect;
    use std::time::Duration;

    fn traced_run() -> RunResult {
        let mut r = RunResult::not_run(Allocator::ShrinkAlloc, Expect::Survives, Outcome::Survived);
        r.wall = Duration::from_secs(4);
        let step = |records, hits, ideal| Replay { records, gets: records, hits, ideal, budget: 1 };
        let series = vec![step(10, 0, 0), step(20, 4, 5), step(30, 8, 10), step(40, 9, 15)];
        r.replay = Some(Ok(Measure { replay: step(40, 9, 15), equivalent: None, series }));
        r
    }

    #[test]
    fn hits_series_is_per_slice_and_skips_slices_without_ideal_hits() {
        let points = hits_series(&traced_run());
        assert_eq!(points, vec![(2.0, 0.8), (3.0, 0.8), (4.0, 0.2)]);
        let untraced = RunResult::not_run(Allocator::Glibc, Expect::DiesAtLimit, Outcome::Survived);
        assert!(hits_series(&untraced).is_empty());
    }

    #[test]
    fn both_files_draw_and_the_png_has_the_chart_size() {
        let plan = Plan::for_tests();
        let runs = [traced_run()];
        let svg = svg(&plan, &runs, "usage").unwrap();
        assert!(svg.contains("hits / ideal") && svg.contains("limit 256 MiB"), "{svg}");
        let png = png(&plan, &runs, "usage").unwrap();
        assert_eq!(&png[1..4], b"PNG");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let (w, h) =
            (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
        assert_eq!((w, h), (WIDTH, USAGE_HEIGHT + HITS_HEIGHT));
    }
}
