//! Bounded range queries for the HTML pages and the inline SVG charts drawn from them on the
//! server (no script, no external file): the status page's response-time sparklines and the
//! `/graph` page's plot.
//!
//! In embedded mode a range query runs on the engine through the API's query gate and
//! timeout. In remote mode the datasource only answers instant queries, so the points are
//! instant queries at each step, and fewer of them ([`MAX_REMOTE_POINTS`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use lookout_promql::Labels;
use lookout_promql::storage::Queryable;

use super::WebState;
use super::status::escape_html;

/// The most points per series a page asks for in embedded mode.
pub const MAX_POINTS: i64 = 240;
/// The most points per series in remote mode, where each point is one instant query.
pub const MAX_REMOTE_POINTS: i64 = 24;

/// One series of a range query.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    /// Its labels.
    pub labels: Labels,
    /// `(milliseconds, value)`, sorted by time; a native histogram's point is its count.
    pub points: Vec<(i64, f64)>,
    /// Whether some points are the counts of native histograms (`histogram_count`).
    pub histogram_counts: bool,
}

/// The step that gives at most `max_points` points in `[start, end]` (whole seconds, at
/// least one).
pub fn step_for(start_ms: i64, end_ms: i64, max_points: i64) -> i64 {
    let span = (end_ms - start_ms).max(0);
    let step = span / (max_points.max(2) - 1);
    (step + 999) / 1000 * 1000
}

/// Runs `expr` over `[start, end]` with at most `max_points` points per series (fewer in
/// remote mode). Returns the series and the step used; errors are the query's message.
pub async fn range(
    st: &WebState,
    expr: &str,
    start_ms: i64,
    end_ms: i64,
    max_points: i64,
) -> Result<(Vec<RangeSeries>, i64), String> {
    if let Some(storage) = st.storage.clone() {
        let step = step_for(start_ms, end_ms, max_points).max(1000);
        let engine = st.engine.clone();
        let q = expr.to_string();
        let matrix = super::api::run_query(st, None, move |control| {
            engine.range_query_controlled(
                storage.as_ref() as &dyn Queryable,
                &q,
                (start_ms, end_ms, step),
                control,
            )
        })
        .await
        .map_err(|e| e.message().to_string())?;
        let series = matrix
            .into_iter()
            .map(|s| {
                let mut points: Vec<(i64, f64)> = s.floats.iter().map(|p| (p.t, p.f)).collect();
                points.extend(s.histograms.iter().map(|p| (p.t, p.h.count)));
                if !s.floats.is_empty() && !s.histograms.is_empty() {
                    points.sort_by_key(|p| p.0);
                }
                RangeSeries {
                    labels: s.metric,
                    points,
                    histogram_counts: !s.histograms.is_empty(),
                }
            })
            .collect();
        return Ok((series, step));
    }
    let Some(ds) = super::status::datasource_of(st) else {
        return Err("no datasource to query".to_string());
    };
    let step = step_for(start_ms, end_ms, max_points.min(MAX_REMOTE_POINTS)).max(1000);
    let mut by_labels: BTreeMap<Labels, (Vec<(i64, f64)>, bool)> = BTreeMap::new();
    let mut t = start_ms;
    while t <= end_ms {
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(t).unwrap_or(0));
        for s in ds.query(expr, at).await.map_err(|e| e.to_string())? {
            let entry = by_labels.entry(s.labels).or_default();
            entry
                .0
                .push((t, s.histogram.as_ref().map_or(s.value, |h| h.count)));
            entry.1 |= s.histogram.is_some();
        }
        t += step;
    }
    let series = by_labels
        .into_iter()
        .map(|(labels, (points, histogram_counts))| RangeSeries {
            labels,
            points,
            histogram_counts,
        })
        .collect();
    Ok((series, step))
}

/// A number in at most four significant digits, with k/M/G for large magnitudes.
pub fn short_number(v: f64) -> String {
    if !v.is_finite() {
        return lookout_promql::engine::value::format_float(v);
    }
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if scaled == scaled.trunc() {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 100.0 {
        format!("{scaled:.1}")
    } else if scaled.abs() >= 1.0 {
        format!("{scaled:.2}")
    } else {
        format!("{scaled:.4}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{suffix}")
}

/// Colours of the plotted series, in order.
pub const PALETTE: [&str; 10] = [
    "#175cd3", "#d92d20", "#067647", "#b54708", "#6941c6", "#0e9384", "#c11574", "#475467",
    "#dc6803", "#3e4784",
];

/// The SVG path of `points` scaled into `w`×`h`; a gap longer than two steps breaks the
/// line, and non-finite values are skipped.
fn path(
    points: &[(i64, f64)],
    x: impl Fn(i64) -> f64,
    y: impl Fn(f64) -> f64,
    step: i64,
) -> String {
    let mut d = String::new();
    let mut last: Option<i64> = None;
    for &(t, v) in points {
        if !v.is_finite() {
            last = None;
            continue;
        }
        let cmd = match last {
            Some(p) if t - p <= 2 * step.max(1) => 'L',
            _ => 'M',
        };
        let _ = write!(d, "{cmd}{:.1} {:.1} ", x(t), y(v));
        last = Some(t);
    }
    d.trim_end().to_string()
}

/// A response-time sparkline: `points` (seconds) over `[start, end]` in a `w`×`h` box, the
/// line from zero to the largest value, with that value and the last one in its title.
pub fn sparkline(points: &[(i64, f64)], start_ms: i64, end_ms: i64, step: i64) -> String {
    const W: f64 = 160.0;
    const H: f64 = 32.0;
    let finite: Vec<f64> = points
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .collect();
    if finite.is_empty() {
        return String::new();
    }
    let max = finite.iter().cloned().fold(0.0f64, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    let span = (end_ms - start_ms).max(1) as f64;
    let x = |t: i64| (t - start_ms) as f64 / span * W;
    let y = |v: f64| H - 2.0 - (v / top).clamp(0.0, 1.0) * (H - 4.0);
    let d = path(points, x, y, step);
    let last = finite.last().copied().unwrap_or(0.0);
    let mut svg = format!(
        r##"<svg class="spark" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="response time"><title>max {}, last {}</title><line x1="0" y1="{b}" x2="{W}" y2="{b}" stroke="#e4e7ec"/><path d="{}" fill="none" stroke="#175cd3" stroke-width="1.5" stroke-linejoin="round"/>"##,
        escape_html(&super::status::human_latency(max)),
        escape_html(&super::status::human_latency(last)),
        d,
        b = H - 2.0,
    );
    // A lone point has no segment to draw: mark it.
    if finite.len() == 1
        && let Some(&(t, v)) = points.iter().find(|p| p.1.is_finite())
    {
        let _ = write!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="2" fill="#175cd3"/>"##,
            x(t),
            y(v)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Hours and minutes (UTC) of a millisecond timestamp.
fn clock(t_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(t_ms)
        .map(|d| d.format("%H:%M").to_string())
        .unwrap_or_default()
}

/// A line chart of `series` over `[start, end]`: a y axis from the smallest value (or 0)
/// to the largest, three grid lines, times (UTC) under the x axis, one coloured line per
/// series in [`PALETTE`] order.
pub fn line_chart(series: &[RangeSeries], start_ms: i64, end_ms: i64, step: i64) -> String {
    const W: f64 = 900.0;
    const H: f64 = 300.0;
    const LEFT: f64 = 60.0;
    const BOTTOM: f64 = 24.0;
    const TOP: f64 = 8.0;
    let values = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
    };
    let mut lo = values().fold(f64::INFINITY, f64::min).min(0.0);
    let mut hi = values().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        lo = 0.0;
        hi = 1.0;
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    let span = (end_ms - start_ms).max(1) as f64;
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - TOP - BOTTOM;
    let x = |t: i64| LEFT + (t - start_ms) as f64 / span * plot_w;
    let y = |v: f64| TOP + plot_h - (v - lo) / (hi - lo) * plot_h;
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {W} {H}" preserveAspectRatio="none" role="img" aria-label="plot of the expression">"#
    );
    for i in 0..=2 {
        let v = lo + (hi - lo) * f64::from(i) / 2.0;
        let gy = y(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#e4e7ec"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11" fill="#667085">{}</text>"##,
            W - 8.0,
            LEFT - 6.0,
            gy + 4.0,
            escape_html(&short_number(v)),
        );
    }
    for i in 0..=4 {
        let t = start_ms + (end_ms - start_ms) * i / 4;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}" font-size="11" fill="#667085">{}</text>"##,
            x(t),
            H - 6.0,
            escape_html(&clock(t)),
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let d = path(&s.points, x, y, step);
        if d.is_empty() {
            continue;
        }
        let _ = write!(
            svg,
            r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.5" stroke-linejoin="round"><title>{}</title></path>"#,
            escape_html(&s.labels.to_string()),
        );
        if s.points.iter().filter(|p| p.1.is_finite()).count() == 1
            && let Some(&(t, v)) = s.points.iter().find(|p| p.1.is_finite())
        {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                x(t),
                y(v)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_bound_the_number_of_points() {
        // 7 days in at most 240 points: a step of 2530 s (rounded up to whole seconds).
        let week = 7 * 86_400_000;
        let step = step_for(0, week, 240);
        assert!(week / step < 240, "{step}");
        assert_eq!(step % 1000, 0);
        assert_eq!(step_for(0, 0, 240), 0);
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(0.04213), "0.0421");
        assert_eq!(short_number(12.5), "12.5");
        assert_eq!(short_number(123_456.0), "123.5k");
        assert_eq!(short_number(2e9), "2G");
    }

    #[test]
    fn sparkline_scales_and_breaks_at_gaps() {
        let points = vec![(0, 0.1), (60_000, 0.2), (300_000, 0.1)];
        let svg = sparkline(&points, 0, 300_000, 60_000);
        assert!(svg.starts_with("<svg"), "{svg}");
        // The third point follows a gap of four steps: a new segment.
        assert_eq!(svg.matches('M').count(), 1 + 1, "{svg}");
        assert!(svg.contains("max 200 ms, last 100 ms"), "{svg}");
        assert!(sparkline(&[], 0, 1, 1).is_empty());
    }

    #[test]
    fn chart_escapes_labels() {
        let labels = Labels::new([("job", "<b>x</b>")]);
        let s = RangeSeries {
            labels,
            points: vec![(0, 1.0), (1000, 2.0)],
            histogram_counts: false,
        };
        let svg = line_chart(&[s], 0, 1000, 1000);
        assert!(!svg.contains("<b>"), "{svg}");
        assert!(svg.contains("&lt;b&gt;"), "{svg}");
    }
}
