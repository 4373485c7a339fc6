//! `GET /graph`: an expression page. A form (expression and time range, plain GET, no
//! script) whose answer is rendered on the server: the expression plotted over the range as
//! an inline SVG chart (from a bounded range query), a legend, and the instant result as a
//! table. A parse error is shown with its line and column and a caret under the
//! expression. Alerts link here (`generatorURL`, `/graph?g0.expr=...`).
//!
//! A native histogram is plotted by its count (`histogram_count`), its legend entry saying
//! so, and shown in the table by its count, sum and buckets ([`histogram_html`]).
//!
//! Bounded: at most [`super::chart::MAX_POINTS`] points per series, [`MAX_SERIES_DRAWN`]
//! series drawn, [`MAX_TABLE_ROWS`] table rows, and ranges from one minute to 30 days.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::Form;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use lookout_promql::QueryError;
use lookout_promql::engine::value::format_float;
use lookout_promql::histogram::{BucketSide, FloatHistogram};

use super::WebState;
use super::api::Params;
use super::chart::{MAX_POINTS, PALETTE, RangeSeries, line_chart};
use super::status::escape_html;

/// The most series the chart draws (the legend says how many were left out).
pub const MAX_SERIES_DRAWN: usize = 20;
/// The most rows of the instant result's table.
pub const MAX_TABLE_ROWS: usize = 200;
/// The most buckets of a native histogram the instant table lists.
pub const MAX_BUCKET_ROWS: usize = 40;
/// The ranges the form offers.
pub const RANGES: [&str; 9] = ["5m", "15m", "1h", "3h", "6h", "12h", "1d", "2d", "7d"];
/// The range when the form gives none.
pub const DEFAULT_RANGE: &str = "1h";
const MIN_RANGE_MS: i64 = 60_000;
const MAX_RANGE_MS: i64 = 30 * 86_400_000;

fn param<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The range in milliseconds of `input` (a Prometheus duration such as `1h`), clamped to
/// one minute .. 30 days; the default range when it does not parse.
pub fn range_ms(input: &str) -> i64 {
    super::api::parse_duration(input)
        .or_else(|_| super::api::parse_duration(DEFAULT_RANGE))
        .unwrap_or(3_600_000)
        .clamp(MIN_RANGE_MS, MAX_RANGE_MS)
}

/// A parse error as HTML: the message with its line and column, and the line of the
/// expression with a caret under the column.
pub fn parse_error_html(expr: &str, message: &str, position: Option<(usize, usize)>) -> String {
    let mut o = String::from("<div class=\"error\">");
    match position {
        Some((line, col)) => {
            let _ = write!(
                o,
                "<div>Parse error at line {line}, column {col}: {}</div>",
                escape_html(message)
            );
            let text = expr.split('\n').nth(line.saturating_sub(1)).unwrap_or("");
            let caret = " ".repeat(col.saturating_sub(1).min(text.chars().count()));
            let _ = write!(
                o,
                "<pre class=\"caret\">{}\n{}^</pre>",
                escape_html(text),
                caret
            );
        }
        None => {
            let _ = write!(o, "<div>Parse error: {}</div>", escape_html(message));
        }
    }
    o.push_str("</div>");
    o
}

const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;background:#f4f6f9;color:#1d2330}
header{background:#101828;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px;font-weight:650}
header a{color:#98a2b3;font-size:13px}
main{max-width:1200px;margin:0 auto;padding:20px;display:grid;gap:16px}
section{background:#fff;border:1px solid #e4e7ec;border-radius:10px;padding:14px 18px;min-width:0}
form{display:flex;gap:8px;flex-wrap:wrap}
input[type=text]{flex:1 1 480px;font:14px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;padding:8px 10px;border:1px solid #d0d5dd;border-radius:6px}
select,button{font:14px system-ui,sans-serif;padding:8px 10px;border:1px solid #d0d5dd;border-radius:6px;background:#fff}
button{background:#175cd3;color:#fff;border-color:#175cd3;font-weight:600}
h2{font-size:13px;margin:0 0 10px;text-transform:uppercase;letter-spacing:.6px;color:#667085}
svg.chart{width:100%;height:300px;display:block}
.legend{list-style:none;margin:8px 0 0;padding:0;font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.legend li{margin:2px 0;word-break:break-all}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:middle}
.error{background:#fef3f2;border:1px solid #fecdca;color:#912018;border-radius:8px;padding:10px 14px}
pre.caret{margin:6px 0 0;font:14px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre;overflow-x:auto}
table{width:100%;border-collapse:collapse}
th{text-align:left;font-size:12px;color:#667085;border-bottom:1px solid #e4e7ec;padding:6px 8px}
td{border-bottom:1px solid #e4e7ec;padding:6px 8px;vertical-align:top}
td.series{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.muted{color:#667085;font-size:13px}
table.buckets{width:auto;margin-top:4px}
table.buckets td,table.buckets th{padding:1px 8px;border:0;font-size:12px}
"#;

/// `GET /graph?g0.expr=&g0.range_input=`
pub async fn page(State(st): State<WebState>, Form(p): Form<Params>) -> Response {
    let expr = param(&p, "g0.expr").unwrap_or("").trim().to_string();
    let range_input = param(&p, "g0.range_input")
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_RANGE)
        .to_string();
    let range = range_ms(&range_input);
    let mut o = String::with_capacity(16 * 1024);
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}Lookout graph</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>Lookout graph</h1><a href="/">status page</a></header>
<main>
<section><form method="get" action="/graph">
<input type="text" name="g0.expr" value="{value}" placeholder="expression, e.g. up" autofocus aria-label="expression">
<select name="g0.range_input" aria-label="time range">"#,
        title = if expr.is_empty() {
            String::new()
        } else {
            format!("{} · ", escape_html(&expr))
        },
        value = escape_html(&expr),
    );
    let mut options: Vec<&str> = RANGES.to_vec();
    if !RANGES.contains(&range_input.as_str()) {
        options.push(range_input.as_str());
    }
    for r in options {
        let _ = write!(
            o,
            r#"<option value="{v}"{sel}>{v}</option>"#,
            v = escape_html(r),
            sel = if r == range_input { " selected" } else { "" }
        );
    }
    o.push_str("</select><button type=\"submit\">Execute</button></form></section>\n");

    if !expr.is_empty() {
        match lookout_promql::engine::parse(&expr) {
            Err(QueryError::Parse {
                message, position, ..
            }) => {
                o.push_str("<section id=\"error\">");
                o.push_str(&parse_error_html(&expr, &message, position));
                o.push_str("</section>\n");
            }
            Err(e) => {
                let _ = writeln!(
                    o,
                    "<section id=\"error\"><div class=\"error\">{}</div></section>",
                    escape_html(&e.to_string())
                );
            }
            Ok(_) => result_sections(&mut o, &st, &expr, range).await,
        }
    }
    o.push_str("</main>\n</body>\n</html>\n");
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        o,
    )
        .into_response()
}

async fn result_sections(o: &mut String, st: &WebState, expr: &str, range: i64) {
    let now = SystemTime::now();
    let end = crate::scrape::target::to_ms(now);
    let start = end - range;
    o.push_str("<section id=\"graph\"><h2>Graph</h2>");
    match super::chart::range(st, expr, start, end, MAX_POINTS).await {
        Ok((mut series, step)) => {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            let total = series.len();
            series.truncate(MAX_SERIES_DRAWN);
            if total == 0 {
                o.push_str("<p class=\"muted\">No data in this range.</p>");
            } else {
                o.push_str(&line_chart(&series, start, end, step));
                legend(o, &series);
                let _ = write!(
                    o,
                    "<p class=\"muted\">{} series, {} points each at most, step {}.",
                    total,
                    (end - start) / step.max(1) + 1,
                    escape_html(&super::status::human_duration(Duration::from_millis(
                        u64::try_from(step).unwrap_or(0)
                    ))),
                );
                if total > MAX_SERIES_DRAWN {
                    let _ = write!(
                        o,
                        " Only the first {MAX_SERIES_DRAWN} are drawn; {} more are not.",
                        total - MAX_SERIES_DRAWN
                    );
                }
                o.push_str("</p>");
            }
        }
        Err(e) => {
            let _ = write!(o, "<div class=\"error\">{}</div>", escape_html(&e));
        }
    }
    o.push_str("</section>\n<section id=\"table\"><h2>Instant result</h2>");
    let result = match super::status::datasource_of(st) {
        Some(ds) => ds.query(expr, now).await.map_err(|e| e.to_string()),
        None => Err("no datasource to query".to_string()),
    };
    match result {
        Ok(mut samples) => {
            samples.sort_by(|a, b| a.labels.cmp(&b.labels));
            if samples.is_empty() {
                o.push_str("<p class=\"muted\">Empty result.</p>");
            } else {
                o.push_str("<table><thead><tr><th>Series</th><th>Value</th></tr></thead><tbody>");
                for s in samples.iter().take(MAX_TABLE_ROWS) {
                    let value = match &s.histogram {
                        Some(h) => histogram_html(h),
                        None => escape_html(&format_float(s.value)),
                    };
                    let _ = write!(
                        o,
                        "<tr><td class=\"series\">{}</td><td class=\"num\">{value}</td></tr>",
                        escape_html(&s.labels.to_string()),
                    );
                }
                o.push_str("</tbody></table>");
                if samples.len() > MAX_TABLE_ROWS {
                    let _ = write!(
                        o,
                        "<p class=\"muted\">{} more rows are not shown.</p>",
                        samples.len() - MAX_TABLE_ROWS
                    );
                }
            }
        }
        Err(e) => {
            let _ = write!(o, "<div class=\"error\">{}</div>", escape_html(&e));
        }
    }
    o.push_str("</section>\n");
}

/// A native histogram as the instant table shows it: its count and sum, then its
/// non-empty buckets in ascending order as `(lower, upper]` (`[lower, upper)` below zero,
/// `[-t, t]` for the zero bucket) with their counts, at most [`MAX_BUCKET_ROWS`] of them.
pub fn histogram_html(h: &FloatHistogram) -> String {
    let mut o = format!(
        "<div class=\"histogram\">count {} · sum {}</div>",
        escape_html(&format_float(h.count)),
        escape_html(&format_float(h.sum)),
    );
    let (mut rows, mut more) = (String::new(), 0usize);
    let mut shown = 0;
    h.for_each_bucket(|side, b| {
        if b.count == 0.0 {
            return;
        }
        if shown == MAX_BUCKET_ROWS {
            more += 1;
            return;
        }
        shown += 1;
        let (open, close) = match side {
            BucketSide::Negative => ('[', ')'),
            BucketSide::Zero => ('[', ']'),
            BucketSide::Positive => ('(', ']'),
        };
        let _ = write!(
            rows,
            "<tr><td>{open}{}, {}{close}</td><td class=\"num\">{}</td></tr>",
            escape_html(&format_float(b.lower)),
            escape_html(&format_float(b.upper)),
            escape_html(&format_float(b.count)),
        );
    });
    if shown > 0 {
        let _ = write!(
            o,
            "<table class=\"buckets\"><thead><tr><th>bucket</th><th>count</th></tr></thead><tbody>{rows}</tbody></table>"
        );
    }
    if more > 0 {
        let _ = write!(
            o,
            "<div class=\"muted\">{more} more buckets are not shown.</div>"
        );
    }
    o
}

fn legend(o: &mut String, series: &[RangeSeries]) {
    o.push_str("<ul class=\"legend\">");
    for (i, s) in series.iter().enumerate() {
        let name = s.labels.to_string();
        let _ = write!(
            o,
            r#"<li><span class="sw" style="background:{}"></span>{}{}</li>"#,
            PALETTE[i % PALETTE.len()],
            escape_html(if name.is_empty() { "{}" } else { &name }),
            if s.histogram_counts {
                r#" <span class="muted">(native histogram: its count is plotted)</span>"#
            } else {
                ""
            },
        );
    }
    o.push_str("</ul>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_bounded() {
        assert_eq!(range_ms("1h"), 3_600_000);
        assert_eq!(range_ms("1s"), MIN_RANGE_MS);
        assert_eq!(range_ms("1y"), MAX_RANGE_MS);
        assert_eq!(range_ms("nonsense"), 3_600_000);
    }

    #[test]
    fn parse_errors_point_at_their_column() {
        let expr = "sum(up{job=\"a\"} +)";
        let Err(QueryError::Parse {
            message, position, ..
        }) = lookout_promql::engine::parse(expr)
        else {
            panic!("parses");
        };
        let (line, col) = position.expect("a position");
        let html = parse_error_html(expr, &message, position);
        assert!(
            html.contains(&format!("line {line}, column {col}")),
            "{html}"
        );
        let caret_line = html.split('\n').nth(1).expect("caret line");
        assert_eq!(caret_line.find('^'), Some(col - 1), "{html}");
        assert!(html.contains("sum(up{job=&quot;a&quot;} +)"), "{html}");
    }

    #[test]
    fn histograms_show_count_sum_and_buckets() {
        let h = lookout_promql::histogram::notation::parse(
            "schema:0 count:9 sum:-2.5 z_bucket:2 z_bucket_w:0.001 buckets:[3 0 1] n_buckets:[3]",
        )
        .unwrap()
        .h;
        let html = histogram_html(&h);
        assert!(html.contains("count 9 · sum -2.5"), "{html}");
        let rows: Vec<&str> = html.split("<tr><td>").skip(1).collect();
        assert_eq!(rows.len(), 4, "{html}");
        assert!(
            rows[0].starts_with("[-1, -0.5)</td><td class=\"num\">3<"),
            "{html}"
        );
        assert!(rows[1].starts_with("[-0.001, 0.001]</td><td class=\"num\">2<"));
        assert!(rows[2].starts_with("(0.5, 1]</td><td class=\"num\">3<"));
        assert!(rows[3].starts_with("(2, 4]</td><td class=\"num\">1<"));
        // Bounded.
        let mut wide = h.clone();
        wide.positive = (0..100)
            .map(|index| lookout_promql::histogram::Bucket { index, count: 1.0 })
            .collect();
        let html = histogram_html(&wide);
        assert_eq!(html.matches("<tr><td>").count(), MAX_BUCKET_ROWS);
        assert!(html.contains("62 more buckets are not shown."), "{html}");
    }
}
