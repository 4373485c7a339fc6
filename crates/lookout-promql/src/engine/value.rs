//! Values an expression evaluates to: scalars, strings, instant vectors and range vectors.
//!
//! A [`Sample`] holds a float or, when [`Sample::h`] is set, a native histogram (its `f`
//! is then 0 and meaningless); a [`Series`] keeps float and histogram points side by side
//! (the way Prometheus keeps `Floats` and `Histograms`).

use std::fmt;
use std::sync::Arc;

use crate::histogram::FloatHistogram;
pub use crate::histogram::HPoint;
use crate::labels::Labels;

/// A float at a point in time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FPoint {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// The value.
    pub f: f64,
}

/// One element of an instant vector. Non-exhaustive: native histograms will add a field.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// The series' labels.
    pub metric: Labels,
    /// Evaluation time in milliseconds.
    pub t: i64,
    /// The float value (0 for a histogram sample).
    pub f: f64,
    /// The native histogram, for a histogram sample.
    pub h: Option<Arc<FloatHistogram>>,
    /// Delayed `__name__` removal: the name (and `__type__`/`__unit__`) is dropped when the
    /// query finishes unless a later step (`label_replace` into `__name__`) keeps it.
    pub drop_name: bool,
}

/// One series of a range vector (or of a range query's result). Non-exhaustive: native
/// histograms will add a point list beside `floats`.
#[derive(Clone, Debug, PartialEq, Default)]
#[non_exhaustive]
pub struct Series {
    /// The series' labels.
    pub metric: Labels,
    /// Float points sorted by time.
    pub floats: Vec<FPoint>,
    /// Histogram points sorted by time (no timestamp is in both lists).
    pub histograms: Vec<HPoint>,
    /// See [`Sample::drop_name`].
    pub drop_name: bool,
    /// Start timestamps aligned with `floats` (ms; 0 = unknown) when this is a range-vector
    /// selector's series that has them; `None` otherwise: as in Prometheus, subqueries and
    /// other expressions do not carry start timestamps.
    pub st: Option<Vec<i64>>,
    /// Start timestamps aligned with `histograms`, as `st` is with `floats`.
    pub hst: Option<Vec<i64>>,
}

/// An instant vector.
pub type Vector = Vec<Sample>;

/// What a histogram counts for against [`super::EngineOptions::max_samples`], as
/// Prometheus counts it (`HPoint.size()`): the bytes of the point in float samples of 16
/// bytes, from a 168-byte struct, 8 per span, bucket and custom bound, and 8 for the
/// timestamp. At least 11, and about one per two buckets.
pub(crate) fn histogram_samples(h: &FloatHistogram) -> usize {
    let spans = |b: &[crate::histogram::Bucket]| {
        b.iter()
            .enumerate()
            .filter(|&(i, x)| i == 0 || b[i - 1].index.checked_add(1) != Some(x.index))
            .count()
    };
    let words = spans(&h.positive)
        + spans(&h.negative)
        + h.positive.len()
        + h.negative.len()
        + h.custom_values.len();
    (168 + 8 * words + 8) / 16
}

/// What a sample counts for against the samples limit: 1 for a float, the
/// [`histogram_samples`] of a histogram.
pub(crate) fn sample_weight(s: &Sample) -> usize {
    s.h.as_deref().map_or(1, histogram_samples)
}

/// The [`sample_weight`]s of `v` added up.
pub(crate) fn vector_weight(v: &[Sample]) -> usize {
    v.iter().map(sample_weight).sum()
}
/// A range vector; also the result of a range query.
pub type Matrix = Vec<Series>;

/// The result of evaluating an expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A single number.
    Scalar {
        /// Evaluation time in milliseconds.
        t: i64,
        /// The number.
        v: f64,
    },
    /// A string literal.
    String {
        /// Evaluation time in milliseconds.
        t: i64,
        /// The string.
        s: String,
    },
    /// An instant vector.
    Vector(Vector),
    /// A range vector.
    Matrix(Matrix),
}

impl Value {
    /// Prometheus's name of the value's type: `scalar`, `string`, `vector` or `matrix`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// Formats a float the way Prometheus prints sample values (`+Inf`, `-Inf`, `NaN`, shortest
/// round-trip decimal otherwise).
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_string()
    } else if f == f64::INFINITY {
        "+Inf".to_string()
    } else if f == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{f}")
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Scalar { v, .. } => write!(f, "scalar: {}", format_float(*v)),
            Value::String { s, .. } => write!(f, "string: {s:?}"),
            Value::Vector(vec) => {
                for s in vec {
                    match &s.h {
                        Some(h) => writeln!(
                            f,
                            "{} => {}",
                            s.metric,
                            crate::histogram::notation::format(h)
                        )?,
                        None => writeln!(f, "{} => {}", s.metric, format_float(s.f))?,
                    }
                }
                Ok(())
            }
            Value::Matrix(m) => {
                for s in m {
                    write!(f, "{} =>", s.metric)?;
                    for p in &s.floats {
                        write!(f, " {} @{}", format_float(p.f), p.t)?;
                    }
                    for p in &s.histograms {
                        write!(f, " {} @{}", crate::histogram::notation::format(&p.h), p.t)?;
                    }
                    writeln!(f)?;
                }
                Ok(())
            }
        }
    }
}
