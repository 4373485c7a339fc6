//! `convert_classic_histograms_to_nhcb` for the text formats, as Prometheus 3's
//! `NHCBParser` does it: the `_bucket`, `_count` and `_sum` series of a family whose
//! `# TYPE` is `histogram` are collected while they follow one another with the same
//! labels (besides `le`), and become one native histogram with custom buckets, named after
//! the family, when anything else comes (another series, another label set, a comment, the
//! end of the body). Data that does not convert (buckets not cumulative, a count that is
//! not the `+Inf` bucket's) gives no histogram, and its classic series are not stored
//! either unless `always_scrape_classic_histograms` keeps them. Protobuf bodies convert in
//! [`super::protobuf`], one metric at a time.

use lookout_promql::Labels;
use lookout_promql::histogram::FloatHistogram;
use lookout_promql::histogram::nhcb::ClassicHistogram;
use lookout_promql::labels::METRIC_NAME;

use super::protobuf::MAX_BUCKETS;
use super::textparse::{ParseError, RawSample};

/// A converted histogram, ready for the scrape cache.
pub(crate) struct Converted {
    /// The cache key: the histogram's labels behind a byte no series text starts with.
    pub(crate) key: String,
    pub(crate) labels: Labels,
    pub(crate) histogram: FloatHistogram,
    /// The explicit timestamp of the last classic series, if it had one.
    pub(crate) timestamp_ms: Option<i64>,
}

struct Group {
    /// The family name and the labels without `le`.
    labels: Labels,
    /// The comment count of its first series: a comment since then ends it.
    comments: usize,
    classic: ClassicHistogram,
    timestamp_ms: Option<i64>,
}

/// Collects the classic histograms of one text body.
#[derive(Default)]
pub(crate) struct TextConverter {
    group: Option<Group>,
}

/// What a sample is to the converter.
enum Part {
    Bucket(f64),
    Count,
    Sum,
}

impl TextConverter {
    /// Takes the next sample of the body. Returns the histogram the samples before it made
    /// (when this one ends a group that converts) and whether this sample is part of a
    /// classic histogram (whose series are then not stored unless kept).
    pub(crate) fn feed(
        &mut self,
        raw: &RawSample<'_>,
    ) -> Result<(Option<Converted>, bool), ParseError> {
        let Some((family, suffix)) = split_name(raw) else {
            return Ok((self.finish(), false));
        };
        let mut labels = raw.labels()?;
        let part = match suffix {
            "_count" => Part::Count,
            "_sum" => Part::Sum,
            _ => match labels.get("le").and_then(parse_le) {
                Some(le) => Part::Bucket(le),
                // A bucket without a usable `le` is an ordinary series, as in Prometheus.
                None => return Ok((None, false)),
            },
        };
        labels.remove("le");
        labels.set(METRIC_NAME, family);
        let same = self
            .group
            .as_ref()
            .is_some_and(|g| g.labels == labels && g.comments == raw.comments);
        let done = if same { None } else { self.finish() };
        let group = self.group.get_or_insert_with(|| Group {
            labels,
            comments: raw.comments,
            classic: ClassicHistogram::new(),
            timestamp_ms: None,
        });
        match part {
            Part::Bucket(le) => {
                group.classic.set_bucket(le, raw.value);
                if group.classic.bucket_count() > MAX_BUCKETS {
                    return Err(ParseError {
                        line: 0,
                        column: 0,
                        message: format!(
                            "classic histogram {} has more than {MAX_BUCKETS} buckets, the most \
                             convert_classic_histograms_to_nhcb converts",
                            group.labels
                        ),
                    });
                }
            }
            Part::Count => group.classic.set_count(raw.value),
            Part::Sum => group.classic.set_sum(raw.value),
        }
        if raw.timestamp_ms.is_some() {
            group.timestamp_ms = raw.timestamp_ms;
        }
        Ok((done, true))
    }

    /// Ends the group being collected: its histogram, if it converts.
    pub(crate) fn finish(&mut self) -> Option<Converted> {
        let g = self.group.take()?;
        let histogram = g.classic.convert().ok()?;
        Some(Converted {
            key: format!("\u{1}{}", g.labels),
            labels: g.labels,
            histogram,
            timestamp_ms: g.timestamp_ms,
        })
    }
}

/// The family and suffix of a sample of the current histogram family (`_bucket`, `_count`
/// or `_sum`), or `None` for any other sample.
fn split_name<'a>(raw: &RawSample<'a>) -> Option<(&'a str, &'a str)> {
    let family = raw.histogram_family?;
    let name = raw.series.split('{').next().unwrap_or("");
    let suffix = name.strip_prefix(family)?;
    matches!(suffix, "_bucket" | "_count" | "_sum").then_some((family, suffix))
}

/// An `le` value (`+Inf`, `1e3`, …; NaN refused).
fn parse_le(v: &str) -> Option<f64> {
    v.parse::<f64>().ok().filter(|le| !le.is_nan())
}
