//! In-memory time-series storage: series identified by their label sets, float samples
//! with millisecond timestamps, selection by PromQL label matchers.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use promql_parser::label::Matcher;

use crate::labels::Labels;

/// Bit pattern of Prometheus's staleness marker (a signalling NaN distinct from ordinary NaN).
pub const STALE_NAN_BITS: u64 = 0x7ff0000000000002;

/// Prometheus's staleness marker as a float. Compare with [`is_stale`], never with `==`.
pub const STALE_NAN: f64 = f64::from_bits(STALE_NAN_BITS);

/// Whether `v` is the staleness marker (bit comparison: NaN never equals itself).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One float sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Timestamp in milliseconds since the Unix epoch.
    pub t: i64,
    /// The value (may be NaN, ±Inf or [`STALE_NAN`]).
    pub v: f64,
}

/// A series and its samples in a queried time range.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesData {
    /// The series' labels, `__name__` included.
    pub labels: Labels,
    /// Samples sorted by timestamp.
    pub samples: Vec<Sample>,
}

/// Something PromQL can read series from.
pub trait Queryable: Send + Sync {
    /// The series matching all `matchers`, sorted by labels, each with its samples in
    /// `[mint_ms, maxt_ms]` (both inclusive) sorted by time. Series without samples in the
    /// range are left out.
    fn select(&self, matchers: &[Matcher], mint_ms: i64, maxt_ms: i64) -> Vec<SeriesData>;
}

/// Why a sample was not appended.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendError {
    /// The timestamp is older than the newest sample of the series.
    #[error(
        "out-of-order sample for series {series}: timestamp {t_ms} is before the newest sample at {last_ms}"
    )]
    OutOfOrder {
        /// The series, in Prometheus notation.
        series: String,
        /// The rejected timestamp.
        t_ms: i64,
        /// The newest timestamp already stored.
        last_ms: i64,
    },
    /// A sample with this timestamp but a different value is already stored.
    #[error("duplicate sample for series {series} at timestamp {t_ms} with a different value")]
    DuplicateTimestamp {
        /// The series, in Prometheus notation.
        series: String,
        /// The timestamp.
        t_ms: i64,
    },
    /// The label set is empty.
    #[error("a series needs at least one label")]
    EmptyLabels,
}

/// Storage settings.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// How long samples are kept behind the newest appended timestamp; `Duration::ZERO`
    /// (the default) keeps everything.
    pub retention: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            retention: Duration::ZERO,
        }
    }
}

/// Memory and size figures of a [`Storage`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StorageStats {
    /// Number of series.
    pub series: usize,
    /// Number of samples.
    pub samples: usize,
    /// Heap bytes of sample data.
    pub chunk_bytes: usize,
    /// Heap bytes of labels, index and series bookkeeping.
    pub index_bytes: usize,
    /// `chunk_bytes / samples` (0 without samples).
    pub bytes_per_sample: f64,
    /// `(chunk_bytes + index_bytes) / series` (0 without series).
    pub bytes_per_series: f64,
}

struct MemSeries {
    samples: Vec<Sample>,
}

/// In-memory series storage; see the module documentation.
pub struct Storage {
    opts: StorageOptions,
    series: RwLock<HashMap<Labels, Mutex<MemSeries>>>,
}

impl Storage {
    /// An empty storage.
    pub fn new(opts: StorageOptions) -> Storage {
        Storage {
            opts,
            series: RwLock::new(HashMap::new()),
        }
    }

    /// The options this storage was made with.
    pub fn options(&self) -> &StorageOptions {
        &self.opts
    }

    /// Appends one sample. Timestamps must increase per series; a repeated timestamp is
    /// accepted (and ignored) only with a bit-identical value, as Prometheus does.
    pub fn append(&self, labels: &Labels, t_ms: i64, v: f64) -> Result<(), AppendError> {
        if labels.is_empty() {
            return Err(AppendError::EmptyLabels);
        }
        {
            let map = self.series.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map.get(labels) {
                let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                return push(&mut s, labels, t_ms, v);
            }
        }
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        let s = map.entry(labels.clone()).or_insert_with(|| {
            Mutex::new(MemSeries {
                samples: Vec::new(),
            })
        });
        push(
            s.get_mut().unwrap_or_else(|e| e.into_inner()),
            labels,
            t_ms,
            v,
        )
    }

    /// Removes every series.
    pub fn clear(&self) {
        self.series
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Drops samples older than `t_ms` and series left without samples.
    pub fn truncate_before(&self, t_ms: i64) {
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| {
            let s = s.get_mut().unwrap_or_else(|e| e.into_inner());
            s.samples.retain(|x| x.t >= t_ms);
            !s.samples.is_empty()
        });
    }

    /// Size figures.
    pub fn stats(&self) -> StorageStats {
        let map = self.series.read().unwrap_or_else(|e| e.into_inner());
        let mut st = StorageStats {
            series: map.len(),
            ..Default::default()
        };
        for (l, s) in map.iter() {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            st.samples += s.samples.len();
            st.chunk_bytes += s.samples.capacity() * std::mem::size_of::<Sample>();
            st.index_bytes += l.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>();
        }
        if st.samples > 0 {
            st.bytes_per_sample = st.chunk_bytes as f64 / st.samples as f64;
        }
        if st.series > 0 {
            st.bytes_per_series = (st.chunk_bytes + st.index_bytes) as f64 / st.series as f64;
        }
        st
    }
}

fn push(s: &mut MemSeries, labels: &Labels, t_ms: i64, v: f64) -> Result<(), AppendError> {
    if let Some(last) = s.samples.last() {
        if t_ms < last.t {
            return Err(AppendError::OutOfOrder {
                series: labels.to_string(),
                t_ms,
                last_ms: last.t,
            });
        }
        if t_ms == last.t {
            if last.v.to_bits() == v.to_bits() {
                return Ok(());
            }
            return Err(AppendError::DuplicateTimestamp {
                series: labels.to_string(),
                t_ms,
            });
        }
    }
    s.samples.push(Sample { t: t_ms, v });
    Ok(())
}

impl Queryable for Storage {
    fn select(&self, matchers: &[Matcher], mint_ms: i64, maxt_ms: i64) -> Vec<SeriesData> {
        let map = self.series.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (l, s) in map.iter() {
            if !matchers
                .iter()
                .all(|m| m.is_match(l.get(&m.name).unwrap_or("")))
            {
                continue;
            }
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            let samples: Vec<Sample> = s
                .samples
                .iter()
                .filter(|x| x.t >= mint_ms && x.t <= maxt_ms)
                .copied()
                .collect();
            if !samples.is_empty() {
                out.push(SeriesData {
                    labels: l.clone(),
                    samples,
                });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage::new(StorageOptions::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promql_parser::label::MatchOp;

    #[test]
    fn append_select_and_reject_out_of_order() {
        let st = Storage::default();
        let l = Labels::new([("__name__", "x"), ("job", "a")]);
        st.append(&l, 1000, 1.0).unwrap();
        st.append(&l, 2000, STALE_NAN).unwrap();
        st.append(&l, 2000, STALE_NAN).unwrap();
        assert!(matches!(
            st.append(&l, 2000, 3.0),
            Err(AppendError::DuplicateTimestamp { .. })
        ));
        assert!(matches!(
            st.append(&l, 500, 3.0),
            Err(AppendError::OutOfOrder { .. })
        ));
        let m = [Matcher::new(MatchOp::Equal, "__name__", "x")];
        let got = st.select(&m, 0, 2000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples.len(), 2);
        assert!(is_stale(got[0].samples[1].v));
        assert_eq!(st.stats().samples, 2);
    }
}
