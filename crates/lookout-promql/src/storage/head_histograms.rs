//! The native histogram samples of one head series, in compressed chunks of Prometheus's
//! float histogram encoding (the one blocks use, chunk encoding 3), written a sample at a
//! time as the head writes floats to XOR chunks: a histogram of 40 buckets takes about 800
//! bytes as a value and a few dozen in a chunk. Queries decode what they read.
//! Samples read back as they were appended, counter reset hints included.

use std::collections::VecDeque;
use std::sync::Arc;

use super::block::histochunk::{FloatAppender, decode_head_chunk};
use crate::histogram::{CounterResetHint, FloatHistogram, HPoint};

/// Samples per chunk; a chunk also ends where the bucket layout or the counter reset hint
/// changes.
const SEAL_AT: usize = 120;

/// One sealed chunk.
struct Sealed {
    mint: i64,
    maxt: i64,
    len: usize,
    data: Box<[u8]>,
    beside: Beside,
}

/// What a chunk's bytes do not say about its samples.
struct Beside {
    /// The first sample's counter reset hint as appended: the chunk header reads "no
    /// reset" as unknown for it (as Prometheus's blocks do), the head gives it back as it
    /// came.
    first_hint: CounterResetHint,
}

/// The chunk being written.
struct Open {
    mint: i64,
    maxt: i64,
    chunk: FloatAppender,
    beside: Beside,
}

/// The histogram samples of a series, boxed among its chunks' rare columns so a float
/// series pays nothing for them.
#[derive(Default)]
pub(super) struct HistColumn {
    sealed: VecDeque<Sealed>,
    open: Option<Open>,
    /// The newest sample: the duplicate check and the next sample's counter reset hint
    /// read it.
    last: Option<HPoint>,
    /// Start timestamps aligned with every sample, sealed ones first (0 = unknown); empty
    /// until the first known one: histograms without start timestamps pay nothing for
    /// them. Kept in the head only, as for floats.
    st: Vec<i64>,
}

impl HistColumn {
    /// The newest sample.
    pub(super) fn last(&self) -> Option<&HPoint> {
        self.last.as_ref()
    }

    pub(super) fn len(&self) -> usize {
        self.sealed.iter().map(|c| c.len).sum::<usize>()
            + self.open.as_ref().map_or(0, |o| o.chunk.len())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.open.is_none()
    }

    /// Appends a sample (the caller checked its order) with start timestamp `st`.
    pub(super) fn push(&mut self, st: i64, p: HPoint) {
        if st != 0 && self.st.is_empty() {
            self.st.resize(self.len(), 0);
        }
        if st != 0 || !self.st.is_empty() {
            self.st.push(st);
        }
        match &mut self.open {
            Some(o) if o.chunk.fits(&p.h, SEAL_AT) => {
                o.chunk.append(&p);
                o.maxt = p.t;
            }
            _ => {
                self.seal();
                self.open = Some(Open {
                    mint: p.t,
                    maxt: p.t,
                    chunk: FloatAppender::new(&p),
                    beside: Beside {
                        first_hint: p.h.counter_reset_hint,
                    },
                });
            }
        }
        self.last = Some(p);
    }

    fn seal(&mut self) {
        if let Some(o) = self.open.take() {
            self.sealed.push_back(Sealed {
                mint: o.mint,
                maxt: o.maxt,
                len: o.chunk.len(),
                data: o.chunk.bytes().into(),
                beside: o.beside,
            });
        }
    }

    /// Copies the samples in `[mint, maxt]` to `out`, and their start timestamps to
    /// `st_out` when any of them has one (`st_out` is left as it was otherwise).
    pub(super) fn read(&self, mint: i64, maxt: i64, out: &mut Vec<HPoint>, st_out: &mut Vec<i64>) {
        let mut sts = Vec::new();
        // Index of the first sample of the chunk at hand among all samples.
        let mut first = 0usize;
        let mut decoded = Vec::new();
        let open = self.open.as_ref().map(|o| {
            let span = (o.mint, o.maxt, o.chunk.len());
            (span, o.chunk.bytes(), &o.beside)
        });
        let sealed = self
            .sealed
            .iter()
            .map(|c| ((c.mint, c.maxt, c.len), &c.data[..], &c.beside));
        for ((c_mint, c_maxt, len), data, beside) in sealed.chain(open) {
            if c_mint > maxt {
                break;
            }
            if c_maxt >= mint {
                decoded.clear();
                // Written here from valid histograms, so it decodes; were it not to, its
                // samples would be missing, not wrong.
                let _ = decode_head_chunk(data, maxt, &mut decoded);
                if let Some(p) = decoded.first_mut()
                    && p.h.counter_reset_hint != beside.first_hint
                {
                    Arc::make_mut(&mut p.h).counter_reset_hint = beside.first_hint;
                }
                for (i, p) in decoded.drain(..).enumerate() {
                    self.keep(first + i, p, (mint, maxt), out, &mut sts);
                }
            }
            first += len;
        }
        if sts.iter().any(|&x| x != 0) {
            st_out.extend_from_slice(&sts);
        }
    }

    /// Adds sample number `k`, `p`, to `out` when it lies in `[mint, maxt]`, with its
    /// start timestamp to `sts` when the series has them.
    fn keep(
        &self,
        k: usize,
        p: HPoint,
        (mint, maxt): (i64, i64),
        out: &mut Vec<HPoint>,
        sts: &mut Vec<i64>,
    ) {
        if p.t >= mint && p.t <= maxt {
            out.push(p);
            if !self.st.is_empty() {
                sts.push(self.st.get(k).copied().unwrap_or(0));
            }
        }
    }

    /// Frees the samples before `cut` (whole chunks, so a chunk reaching past `cut` stays
    /// whole: reads filter by time).
    pub(super) fn truncate_before(&mut self, cut: i64) {
        let mut dropped = 0;
        while self.sealed.front().is_some_and(|c| c.maxt < cut) {
            dropped += self.sealed.pop_front().map_or(0, |c| c.len);
        }
        if self.sealed.is_empty() && self.open.as_ref().is_some_and(|o| o.maxt < cut) {
            dropped += self.open.take().map_or(0, |o| o.chunk.len());
        }
        self.st.drain(..dropped.min(self.st.len()));
        if self.is_empty() {
            self.last = None;
        }
    }

    /// Bytes on the heap (the newest histogram counted by its buckets).
    pub(super) fn heap_bytes(&self) -> usize {
        let value = |h: &FloatHistogram| {
            size_of::<FloatHistogram>()
                + 2 * size_of::<usize>()
                + (h.positive.capacity() + h.negative.capacity())
                    * size_of::<crate::histogram::Bucket>()
        };
        size_of::<HistColumn>()
            + self.sealed.capacity() * size_of::<Sealed>()
            + self.sealed.iter().map(|c| c.data.len()).sum::<usize>()
            + self
                .open
                .as_ref()
                .map_or(0, |o| size_of::<Open>() + o.chunk.heap_bytes())
            + self.last.as_ref().map_or(0, |p| value(&p.h))
            + self.st.capacity() * size_of::<i64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{Bucket, CounterResetHint};

    /// 1,000 samples: a bucket appears every 150, a reset at 500, gauges from 800; start
    /// timestamps from 300.
    fn samples() -> Vec<(i64, HPoint)> {
        (0..1000i64)
            .map(|i| {
                let n = (i % 500) as f64;
                let hint = match i {
                    0 | 500 => CounterResetHint::Unknown,
                    800.. => CounterResetHint::Gauge,
                    _ if i % 150 == 0 => CounterResetHint::Unknown,
                    _ => CounterResetHint::NotReset,
                };
                let h = FloatHistogram {
                    schema: 3,
                    count: 3.0 * n,
                    sum: n * 0.25,
                    positive: (0..=(i / 150) as i32)
                        .map(|k| Bucket {
                            index: k * 2 - 5,
                            count: n + f64::from(k),
                        })
                        .collect(),
                    counter_reset_hint: hint,
                    ..FloatHistogram::default()
                };
                let st = if i >= 300 { i * 15_000 - 15_000 } else { 0 };
                (
                    st,
                    HPoint {
                        t: i * 15_000,
                        h: Arc::new(h),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn sealed_chunks_read_back_the_samples_and_start_times() {
        let all = samples();
        let mut col = HistColumn::default();
        for (st, p) in &all {
            col.push(*st, p.clone());
        }
        assert_eq!(col.len(), 1000);
        assert!(col.sealed.len() >= 8, "{} chunks", col.sealed.len());
        let read = |col: &HistColumn, mint: i64, maxt: i64| {
            let (mut out, mut st) = (Vec::new(), Vec::new());
            col.read(mint, maxt, &mut out, &mut st);
            (out, st)
        };
        for (lo, hi) in [
            (0, 999),
            (0, 10),
            (100, 140),
            (119, 121),
            (290, 320),
            (990, 999),
        ] {
            let (out, st) = read(&col, lo * 15_000, hi * 15_000);
            let want: Vec<&HPoint> = all[lo as usize..=hi as usize]
                .iter()
                .map(|x| &x.1)
                .collect();
            assert_eq!(out.len(), want.len(), "{lo}..={hi}");
            for (a, b) in out.iter().zip(&want) {
                assert_eq!(a, *b, "{lo}..={hi}");
            }
            let want_st: Vec<i64> = all[lo as usize..=hi as usize].iter().map(|x| x.0).collect();
            if want_st.iter().any(|&x| x != 0) {
                assert_eq!(st, want_st, "{lo}..={hi}");
            } else {
                assert!(st.is_empty());
            }
        }
        // Between samples and outside: nothing.
        assert!(read(&col, 15_001, 29_999).0.is_empty());
        assert!(read(&col, 1000 * 15_000, i64::MAX).0.is_empty());
        // Sealed, the histograms take a fraction of their size as values.
        let values: usize = all
            .iter()
            .map(|(_, p)| size_of::<FloatHistogram>() + p.h.positive.capacity() * 16)
            .sum();
        assert!(
            col.heap_bytes() * 4 < values,
            "{} vs {values}",
            col.heap_bytes()
        );
        // Retention drops whole chunks before the cut and keeps the alignment.
        col.truncate_before(600 * 15_000);
        let (out, st) = read(&col, 0, i64::MAX);
        let first = (out[0].t / 15_000) as usize;
        assert!((481..=600).contains(&first), "{first}");
        assert_eq!(out.len(), 1000 - first);
        let want_st: Vec<i64> = all[first..].iter().map(|x| x.0).collect();
        assert_eq!(st, want_st);
        col.truncate_before(i64::MAX);
        assert!(col.is_empty() && col.last().is_none());
    }
}
