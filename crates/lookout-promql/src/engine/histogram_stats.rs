//! Prometheus's histogram-stats decoding: a selector whose histograms only feed
//! `histogram_count`, `histogram_sum` or `histogram_avg` is read with Prometheus's
//! `HistogramStatsIterator`, which gives each histogram with an unknown counter reset
//! hint the hint that reset detection against the previous sample yields. Aggregations
//! of such histograms then see (and warn about) conflicting resets as in Prometheus.
//! Here the selector's data is read as usual and only the hints are set.

use std::collections::HashSet;
use std::sync::Arc;

use promql_parser::parser::Expr;

use crate::histogram::CounterResetHint;
use crate::storage::SeriesData;

/// The selectors (by address) read with stats decoding: below `histogram_count`,
/// `histogram_sum` or `histogram_avg` with no subquery, `histogram_quantile(s)`,
/// `histogram_fraction` or trim operator in between. `stats` says whether such a call
/// is above `e` with nothing in between that needs buckets. The recursion follows the
/// parsed query, whose depth the parser bounds.
pub(crate) fn collect_stats_selectors(e: &Expr, stats: bool, out: &mut HashSet<usize>) {
    match e {
        Expr::VectorSelector(vs) => {
            if stats {
                out.insert(vs as *const _ as usize);
            }
        }
        Expr::MatrixSelector(ms) => {
            if stats {
                out.insert(&ms.vs as *const _ as usize);
            }
        }
        Expr::Subquery(sq) => collect_stats_selectors(&sq.expr, false, out),
        Expr::Call(c) => {
            let stats = match c.func.name {
                "histogram_count" | "histogram_sum" | "histogram_avg" => true,
                "histogram_quantile" | "histogram_quantiles" | "histogram_fraction" => false,
                _ => stats,
            };
            for a in &c.args.args {
                collect_stats_selectors(a, stats, out);
            }
        }
        Expr::Binary(b) => {
            let trim = super::binary::is_trim_expr(b);
            collect_stats_selectors(&b.lhs, stats && !trim, out);
            collect_stats_selectors(&b.rhs, stats && !trim, out);
        }
        Expr::Aggregate(a) => {
            collect_stats_selectors(&a.expr, stats, out);
            if let Some(p) = &a.param {
                collect_stats_selectors(p, stats, out);
            }
        }
        Expr::Unary(u) => collect_stats_selectors(&u.expr, stats, out),
        Expr::Paren(p) => collect_stats_selectors(&p.expr, stats, out),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Sets the counter reset hints of each series' histograms as the stats iterator does:
/// an unknown hint becomes `Reset` or `NotReset` by detection against the previous
/// histogram read.
pub(crate) fn set_stats_hints(data: &mut [SeriesData]) {
    for sd in data {
        let mut last: Option<Arc<crate::histogram::FloatHistogram>> = None;
        for p in sd.histograms.iter_mut() {
            if crate::storage::is_stale(p.h.sum) {
                continue;
            }
            if p.h.counter_reset_hint == CounterResetHint::Unknown
                && let Some(prev) = &last
            {
                let hint = if p.h.detect_reset(prev) {
                    CounterResetHint::Reset
                } else {
                    CounterResetHint::NotReset
                };
                Arc::make_mut(&mut p.h).counter_reset_hint = hint;
            }
            last = Some(p.h.clone());
        }
    }
}
