//! Binary operators where a side is a native histogram (Prometheus's
//! `vectorElemBinop` for histograms): `h + h`, `h - h`, `h * f`, `f * h`, `h / f`,
//! and `==`/`!=` between histograms. Everything else is an incompatible pairing: no
//! result and an info annotation.

use std::sync::Arc;

use super::AnnotationLevel;
use super::binary::BinOp;
use crate::histogram::{CounterResetHint, FloatHistogram};

/// An annotation a binary operation raised.
pub(crate) type Note = (AnnotationLevel, String);

/// The outcome for one pair: float and histogram value, whether to keep it.
pub(crate) struct HistElem {
    pub(crate) f: f64,
    pub(crate) h: Option<Arc<FloatHistogram>>,
    pub(crate) keep: bool,
}

fn type_name(h: Option<&Arc<FloatHistogram>>) -> &'static str {
    if h.is_some() { "histogram" } else { "float" }
}

/// The operator as Prometheus prints it.
fn op_text(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Mod => "%",
        BinOp::Pow => "^",
        BinOp::Atan2 => "atan2",
        BinOp::Eq => "==",
        BinOp::Ne => "!=",
        BinOp::Gt => ">",
        BinOp::Lt => "<",
        BinOp::Ge => ">=",
        BinOp::Le => "<=",
        BinOp::And => "and",
        BinOp::Or => "or",
        BinOp::Unless => "unless",
        BinOp::TrimUpper => "</",
        BinOp::TrimLower => ">/",
    }
}

fn scaled(h: &FloatHistogram, f: impl FnOnce(&mut FloatHistogram)) -> Option<Arc<FloatHistogram>> {
    let mut h = h.clone();
    f(&mut h);
    h.compact();
    Some(Arc::new(h))
}

/// Applies `op` where at least one side is a histogram; `Err` is the annotation of an
/// operation without a result.
pub(crate) fn hist_elem(
    op: BinOp,
    (fl, hl): (f64, Option<&Arc<FloatHistogram>>),
    (fr, hr): (f64, Option<&Arc<FloatHistogram>>),
    notes: &mut Vec<Note>,
) -> Result<HistElem, Note> {
    let incompatible = || {
        let o = op_text(op);
        (
            AnnotationLevel::Info,
            format!(
                "incompatible sample types encountered for binary operator {o:?}: {} {o} {}",
                type_name(hl),
                type_name(hr)
            ),
        )
    };
    let done = |h| {
        Ok(HistElem {
            f: 0.0,
            h,
            keep: true,
        })
    };
    match (hl, hr, op) {
        (None, Some(h), BinOp::Mul) => done(scaled(h, |h| h.mul(fl))),
        (Some(h), None, BinOp::Mul) => done(scaled(h, |h| h.mul(fr))),
        (Some(h), None, BinOp::Div) => done(scaled(h, |h| h.div(fr))),
        (Some(h), None, BinOp::TrimUpper) => done(scaled(h, |h| h.trim(fr, true))),
        (Some(h), None, BinOp::TrimLower) => done(scaled(h, |h| h.trim(fr, false))),
        (Some(a), Some(b), BinOp::Add | BinOp::Sub) => {
            let mut h = (**a).clone();
            let (res, what) = if op == BinOp::Add {
                (h.add(b), "addition")
            } else {
                (h.sub(b), "subtraction")
            };
            let Ok(c) = res else {
                return Err((
                    AnnotationLevel::Warning,
                    format!(
                        "incompatible bucket layout encountered for binary operator {}",
                        op_text(op)
                    ),
                ));
            };
            if op == BinOp::Sub {
                h.counter_reset_hint = CounterResetHint::Gauge;
            }
            if c.counter_reset_collision {
                notes.push((
                    AnnotationLevel::Warning,
                    format!("conflicting counter resets during histogram {what}"),
                ));
            }
            if c.nhcb_bounds_reconciled {
                notes.push((
                    AnnotationLevel::Info,
                    format!("mismatched custom buckets were reconciled during {what}"),
                ));
            }
            h.compact();
            done(Some(Arc::new(h)))
        }
        (Some(a), Some(b), BinOp::Eq | BinOp::Ne) => {
            let equal = same(a, b);
            Ok(HistElem {
                f: 0.0,
                h: Some(a.clone()),
                keep: equal == (op == BinOp::Eq),
            })
        }
        _ => Err(incompatible()),
    }
}

/// Prometheus's `Equals` on compacted histograms: same layout and bit-identical values.
fn same(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    a.compact();
    b.compact();
    let bits = |x: f64, y: f64| x.to_bits() == y.to_bits();
    a.schema == b.schema
        && bits(a.zero_threshold, b.zero_threshold)
        && bits(a.zero_count, b.zero_count)
        && bits(a.count, b.count)
        && bits(a.sum, b.sum)
        && a.positive.len() == b.positive.len()
        && a.negative.len() == b.negative.len()
        && a.positive
            .iter()
            .zip(&b.positive)
            .chain(a.negative.iter().zip(&b.negative))
            .all(|(x, y)| x.index == y.index && bits(x.count, y.count))
        && (!a.uses_custom_buckets()
            || crate::histogram::custom_bounds_match(&a.custom_values, &b.custom_values))
}
