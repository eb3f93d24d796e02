//! The SVG chart of a scenario: memory usage against time, one line per
//! allocator, the limit drawn, axes labelled; for a survivor of a traced
//! scenario its usage band after warm-up (two thin lines) and, in the
//! legend, its hits against the oracle's. Written by hand: a few dozen
//! SVG elements need no crate.
//!
//! Invariant: every coordinate goes through [`Frame`], which maps data
//! (seconds, MiB) into the plot area, so lines, ticks and limits agree; a
//! run that ended early ends its line with a cross, a survivor with a dot.

use std::fmt::Write as _;

use crate::allocator::Allocator;
use crate::runner::{Outcome, Plan, RunResult};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const MIB: f64 = (1u64 << 20) as f64;

fn color(a: Allocator) -> &'static str {
    match a {
        Allocator::ShrinkAlloc => "#1b9e77",
        Allocator::ShrinkAllocNoShrink => "#7570b3",
        Allocator::Glibc => "#d95f02",
        Allocator::Jemalloc => "#e7298a",
        Allocator::Mimalloc => "#a6761d",
    }
}

/// Maps data coordinates (seconds, MiB) into the plot area.
struct Frame {
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, t: f64) -> f64 {
        LEFT + t / self.x_max * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, mib: f64) -> f64 {
        HEIGHT - BOTTOM - mib / self.y_max * (HEIGHT - TOP - BOTTOM)
    }
}

/// A tick step of 1, 2 or 5 times a power of ten giving at most `ticks` ticks.
fn nice_step(range: f64, ticks: f64) -> f64 {
    let raw = (range / ticks).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&s| s >= raw).unwrap_or(10.0 * magnitude)
}

/// The multiples of `step` from 0 to `max`.
fn ticks(max: f64, step: f64) -> impl Iterator<Item = f64> {
    (0..).map(move |i| f64::from(i) * step).take_while(move |&v| v <= max + step * 1e-6)
}

/// A tick value with as many decimals as its step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10()).ceil() as usize };
    format!("{v:.decimals$}")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The chart of `results` as an SVG document; `usage` names what was
/// measured (the cgroup's usage, or the child's RSS without a cgroup).
pub fn svg(plan: &Plan, results: &[RunResult], usage: &str) -> String {
    let limit = plan.limit as f64 / MIB;
    let t_max = results.iter().flat_map(|r| r.samples.last()).map(|s| s.t).fold(plan.duration.as_secs_f64(), f64::max);
    let peak = results.iter().map(|r| r.peak as f64 / MIB).fold(0.0, f64::max);
    let f = Frame { x_max: t_max.max(1.0), y_max: (limit * 1.12).max(peak * 1.05) };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!("{}: memory usage under a {limit:.0} MiB limit, seed {}", plan.scenario.name, plan.seed);
    let _ = writeln!(s, r#"<text x="{LEFT}" y="28" font-size="17" font-weight="bold">{}</text>"#, escape(&title));
    axes(&mut s, &f, usage);
    limits(&mut s, &f, plan, results);
    for r in results.iter().filter(|r| !r.samples.is_empty()) {
        line(&mut s, &f, r);
        band(&mut s, &f, plan, r);
    }
    legend(&mut s, plan, results);
    s.push_str("</svg>\n");
    s
}

fn axes(s: &mut String, f: &Frame, usage: &str) {
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP);
    let step = nice_step(f.x_max, 10.0);
    for t in ticks(f.x_max, step) {
        let x = f.x(t);
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#eee"/>"##);
        let label = tick_label(t, step);
        let _ = writeln!(s, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#, y0 + 18.0);
    }
    let step = nice_step(f.y_max, 8.0);
    for m in ticks(f.y_max, step) {
        let y = f.y(m);
        let _ = writeln!(s, r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#eee"/>"##);
        let label = tick_label(m, step);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#, x0 - 6.0, y + 4.0);
    }
    let _ = writeln!(s, r#"<path d="M{x0},{y1} V{y0} H{x1}" fill="none" stroke="black"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since the child started (s)</text>"#,
        (x0 + x1) / 2.0,
        HEIGHT - 18.0
    );
    let (cx, cy) = (22.0, (y0 + y1) / 2.0);
    let _ = writeln!(
        s,
        r#"<text x="{cx}" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 {cx} {cy:.1})">{} (MiB)</text>"#,
        escape(usage)
    );
}

/// The limit, and shrinkalloc's hard limit as a shrinkalloc child reported it.
fn limits(s: &mut String, f: &Frame, plan: &Plan, results: &[RunResult]) {
    let limit = plan.limit as f64 / MIB;
    let y = f.y(limit);
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#c00" stroke-width="2" stroke-dasharray="8 5"/>"##,
        WIDTH - RIGHT
    );
    let _ = writeln!(s, r##"<text x="{:.1}" y="{:.1}" fill="#c00">limit {limit:.0} MiB</text>"##, LEFT + 6.0, y - 6.0);
    if let Some((hard, _)) = results.iter().find_map(RunResult::limits_in_force) {
        let hard = hard as f64 / MIB;
        let y = f.y(hard);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#888" stroke-dasharray="2 4"/>"##,
            WIDTH - RIGHT
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#666" text-anchor="end">shrinkalloc hard limit {hard:.0} MiB</text>"##,
            WIDTH - RIGHT - 6.0,
            y + 15.0
        );
    }
}

fn line(s: &mut String, f: &Frame, r: &RunResult) {
    let c = color(r.allocator);
    let points: Vec<String> =
        r.samples.iter().map(|p| format!("{:.1},{:.1}", f.x(p.t), f.y(p.usage as f64 / MIB))).collect();
    let _ = writeln!(s, r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#, points.join(" "));
    let Some(last) = r.samples.last() else { return };
    let (x, y) = (f.x(last.t), f.y(last.usage as f64 / MIB));
    if r.outcome == Outcome::Survived {
        let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{c}"/>"#);
    } else {
        let _ = writeln!(
            s,
            r#"<path d="M{:.1},{:.1} l10,10 m0,-10 l-10,10" stroke="{c}" stroke-width="2.5"/>"#,
            x - 5.0,
            y - 5.0
        );
    }
}

/// A survivor's usage band after warm-up: thin dashed lines at its least
/// and most usage over the last three quarters of its run.
fn band(s: &mut String, f: &Frame, plan: &Plan, r: &RunResult) {
    let Some((lo, hi)) = r.band(plan.duration) else { return };
    if r.outcome != Outcome::Survived {
        return;
    }
    let c = color(r.allocator);
    let end = plan.duration.as_secs_f64();
    let (x0, x1) = (f.x(end / 4.0), f.x(end));
    for b in [lo, hi] {
        let y = f.y(b as f64 / MIB);
        let _ = writeln!(
            s,
            r#"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="{c}" stroke-width="1" stroke-dasharray="3 3"/>"#
        );
    }
}

fn legend(s: &mut String, plan: &Plan, results: &[RunResult]) {
    let x = WIDTH - RIGHT + 20.0;
    let mut y = TOP + 10.0;
    for r in results.iter().filter(|r| !r.samples.is_empty()) {
        let c = color(r.allocator);
        let _ = writeln!(s, r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{c}" stroke-width="3"/>"#, x + 22.0);
        let _ =
            writeln!(s, r#"<text x="{}" y="{}" font-weight="bold">{}</text>"#, x + 30.0, y + 4.0, r.allocator.name());
        let how = format!("{} at {:.1} s", r.outcome.label(), r.wall.as_secs_f64());
        let _ = writeln!(s, r##"<text x="{}" y="{}" fill="#444">{}</text>"##, x + 30.0, y + 20.0, escape(&how));
        y += 44.0;
        if let Some(ratio) = r.oracle().and_then(|o| o.ratio()) {
            let band = r.band(plan.duration).filter(|_| r.outcome == Outcome::Survived);
            let band = band.map_or(String::new(), |b| format!(", band {}", crate::report::band(b, plan.limit)));
            let what = format!("hits {ratio:.2} of ideal{band}");
            let _ = writeln!(s, r##"<text x="{}" y="{}" fill="#444">{}</text>"##, x + 30.0, y - 8.0, escape(&what));
            y += 16.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_steps_are_one_two_or_five() {
        assert_eq!(nice_step(20.0, 10.0), 2.0);
        assert_eq!(nice_step(256.0 * 1.12, 8.0), 50.0);
        assert_eq!(nice_step(7.0, 10.0), 1.0);
        assert_eq!(nice_step(0.5, 10.0), 0.05);
        assert_eq!(tick_label(0.1 + 0.2, 0.1), "0.3");
        assert_eq!(ticks(1.0, 0.25).count(), 5);
    }

    #[test]
    fn frame_puts_the_origin_bottom_left() {
        let f = Frame { x_max: 10.0, y_max: 100.0 };
        assert_eq!((f.x(0.0), f.y(0.0)), (LEFT, HEIGHT - BOTTOM));
        assert_eq!((f.x(10.0), f.y(100.0)), (WIDTH - RIGHT, TOP));
    }
}
