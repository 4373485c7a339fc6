//! The scrape cache, as Prometheus's `scrapeCache`: per target, the text of each series
//! line as the body writes it (`name{labels}`) → what that text became the first time it was
//! seen: a stored series, or dropped by `metric_relabel_configs`. A series that comes back
//! unchanged, which is nearly every series of nearly every scrape, then skips building its
//! labels, merging the target's labels in, relabelling, the label limits and the storage's
//! look-up by label set; it costs one hash of its text. The cache's scrape numbers also give
//! staleness (the series of the previous scrape that this one lacks) without building a set
//! of label sets per scrape.
//!
//! [`ingest`] runs one scrape's body through it, off the async runtime: parse, resolve
//! (limits checked, nothing stored yet), then append and write stale markers.
//!
//! Unlike Prometheus's, the cache does not keep the text itself: it keys each entry by a
//! 128-bit digest of the text ([`TextKey`]): SipHash-1-3 with its 128-bit output, in one
//! pass, under a 128-bit key drawn at random per process. At 100,000 series the texts were
//! about 10 MB of the evaluator's memory; two texts share a digest with a probability of
//! about n²/2¹²⁹ (10⁻²⁹ for a target of 10⁶ series), and a target cannot aim for a
//! collision without the process's key (SipHash is a keyed pseudorandom function, the
//! variant with 1 and 3 rounds the one std's `HashMap` relies on against flooding).
//!
//! Layout, about 48 bytes a series: the entries are a `Vec` of 40-byte [`Entry`]s (the
//! key, the state, two scrape numbers), reused through a free list, and trimmed after the
//! first scrape has filled them; the index is a `hashbrown::HashTable` of 4-byte slots,
//! hashed by the first half of the key (a keyed hash already) and compared through the key
//! of the slot's entry. A series not stored yet keeps its labels out of line (a `Box`), as
//! only the first scrape or the storage's series limit leaves entries so. A map of key to
//! slot took 72 bytes a series: its buckets held the key as well.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use hashbrown::HashTable;
use lookout_promql::Labels;
use lookout_promql::histogram::{FloatHistogram, MIN_SCHEMA};
use lookout_promql::labels::METRIC_NAME;
use lookout_promql::storage::{AppendError, STALE_NAN, SeriesRef, Storage};
use siphasher::sip128::{Hasher128, SipHasher13};

use super::ScrapeMetrics;
use super::nhcb::{Converted, TextConverter};
use super::protobuf::{self, Value};
use super::relabel;
use super::target::{
    BodyFormat, LoopOptions, ScrapeError, Target, check_label_limits, merge_target_labels,
};
use super::textparse;

/// The digest of a series text: its SipHash-1-3 128-bit value under the process's key.
/// One pass over the text (two 64-bit SipHash values took two, a tenth of a scrape's CPU).
#[derive(Clone, Copy, PartialEq, Eq)]
struct TextKey(u64, u64);

impl TextKey {
    fn of(text: &str) -> TextKey {
        // The key: two values of std's randomly keyed hasher (seeded from the operating
        // system), unknown outside the process.
        static KEY: LazyLock<(u64, u64)> = LazyLock::new(|| {
            let state = std::collections::hash_map::RandomState::new();
            (state.hash_one(0u8), state.hash_one(1u8))
        });
        let mut h = SipHasher13::new_with_keys(KEY.0, KEY.1);
        h.write(text.as_bytes());
        let d = h.finish128();
        TextKey(d.h1, d.h2)
    }
}

/// The scrape cache of one target.
#[derive(Default)]
pub(crate) struct ScrapeCache {
    /// The slots in `entries` of the cached texts, hashed by the first half of their key
    /// and compared by the key their entry holds.
    index: HashTable<u32>,
    entries: Vec<Entry>,
    /// Slots of removed entries, for reuse.
    free: Vec<u32>,
    /// Number of the current scrape; 0 before the first. 32 bits last 136 years of
    /// scrapes a second (then it starts again at 1).
    iter: u32,
    /// Series a previous loop for the same target wrote in its last scrape (a reload
    /// restarted the loop): the first scrape marks stale those it does not write.
    carried: HashSet<Labels>,
}

struct Entry {
    /// The digest of the series text. A free slot keeps its last one, out of `index`.
    key: TextKey,
    state: State,
    /// Last scrape whose body had the text.
    used: u32,
    /// Last scrape that appended it without an explicit timestamp: staleness follows these.
    tracked: u32,
}

enum State {
    /// Dropped by relabelling, or left without a metric name.
    Dropped,
    /// Kept, not stored yet: new, or refused by the storage's series limit last time. Rare
    /// once the first scrape is stored, so out of line: the entry stays 40 bytes.
    Pending(Box<Labels>),
    /// Stored.
    Stored(SeriesRef),
}

impl State {
    fn labels(&self) -> Option<&Labels> {
        match self {
            State::Dropped => None,
            State::Pending(l) => Some(&**l),
            State::Stored(r) => Some(r.labels()),
        }
    }
}

/// What one scrape did, for the report series and the targets page.
#[derive(Debug, Default)]
pub(crate) struct Ingested {
    /// Samples in the body.
    pub(crate) scraped: usize,
    /// Samples left after relabelling.
    pub(crate) post_relabel: usize,
    /// Samples whose series the previous scrape did not write.
    pub(crate) added: usize,
    /// Samples stored.
    pub(crate) stored: usize,
    /// Samples of new series the series limit refused, and that limit.
    pub(crate) refused: usize,
    pub(crate) series_limit: usize,
}

/// Everything [`ingest`] needs besides the cache.
pub(crate) struct Job<'a> {
    pub(crate) target: &'a Target,
    pub(crate) opts: &'a LoopOptions,
    pub(crate) storage: &'a Storage,
    pub(crate) metrics: &'a ScrapeMetrics,
    /// The scrape's timestamp.
    pub(crate) t: i64,
    /// Set when the scrape's time is up: parsing stops soon after.
    pub(crate) stop: &'a AtomicBool,
}

impl ScrapeCache {
    /// A cache whose first scrape marks stale the `carried` series it does not write.
    pub(crate) fn new(carried: HashSet<Labels>) -> ScrapeCache {
        ScrapeCache {
            carried,
            ..ScrapeCache::default()
        }
    }

    /// The series the last scrape wrote without explicit timestamps.
    pub(crate) fn last_series(&self) -> HashSet<Labels> {
        let mut out: HashSet<Labels> = self
            .entries
            .iter()
            .filter(|e| e.tracked == self.iter && self.iter > 0)
            .filter_map(|e| e.state.labels().cloned())
            .collect();
        out.extend(self.carried.iter().cloned());
        out
    }

    /// The slot of the entry for `key`, if the cache has one.
    /// The slot of `key`, tried first at `guess`: a body lists its series in the same order
    /// scrape after scrape, so the entry after the previous line's is nearly always the
    /// one, and reading the entries in order spares a random probe of the table per line.
    fn find(&self, key: TextKey, guess: usize) -> Option<u32> {
        // A free slot keeps its old key: `used` is 0 only there (a live entry's last scrape
        // number is at least 1).
        if let Some(e) = self.entries.get(guess)
            && e.used != 0
            && e.key == key
        {
            return u32::try_from(guess).ok();
        }
        let entries = &self.entries;
        let same = |slot: &u32| entries[*slot as usize].key == key;
        self.index.find(key.0, same).copied()
    }

    fn insert(&mut self, key: TextKey, state: State) -> u32 {
        let entry = Entry {
            key,
            state,
            used: 0,
            tracked: 0,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.entries[slot as usize] = entry;
                slot
            }
            None => {
                self.entries.push(entry);
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        // The entry is in place first: a growing table rehashes through it.
        let entries = &self.entries;
        let hash = |slot: &u32| entries[*slot as usize].key.0;
        self.index.insert_unique(key.0, slot, hash);
        slot
    }

    /// Drops the entries the current scrape did not use.
    fn evict(&mut self) {
        let iter = self.iter;
        let (entries, free) = (&mut self.entries, &mut self.free);
        self.index.retain(|slot| {
            let e = &mut entries[*slot as usize];
            let keep = e.used == iter;
            if !keep {
                e.state = State::Dropped;
                e.used = 0;
                free.push(*slot);
            }
            keep
        });
        // The entries grow by doubling while the first scrape fills them: a target of
        // 10,000 series would keep room for 16,384 from then on.
        if self.entries.capacity() > self.entries.len() + self.entries.len() / 2 {
            self.entries.shrink_to_fit();
        }
    }
}

/// Runs one scrape through the cache: the body's samples (none when the scrape failed
/// before it had a body) are parsed, resolved and checked against the job's limits, then
/// appended at `job.t`; then stale markers go to the series of the previous scrape that
/// this one lacks. A limit or parse error stores none of the body's samples. Returns what it
/// did and when the body was parsed (the end of the scrape proper).
pub(crate) fn ingest(
    cache: &mut ScrapeCache,
    body: Option<(Vec<u8>, BodyFormat)>,
    job: &Job<'_>,
) -> (Result<Ingested, ScrapeError>, Instant) {
    cache.iter = cache.iter.checked_add(1).unwrap_or(1);
    let result = body.map(|(body, format)| resolve(cache, &body, format, job));
    let parsed = Instant::now();
    let result = match result {
        None => Ok(Ingested::default()),
        // Whatever a parse stopped by the deadline returns (its own "stopped" error, or a
        // result that came too late) is the scrape's timeout.
        Some(Err(ScrapeError::Parse(e))) if e.message == textparse::STOPPED => {
            Err(ScrapeError::ParseTimeout(job.target.timeout))
        }
        Some(Err(ScrapeError::Protobuf(e))) if e.message == protobuf::STOPPED => {
            Err(ScrapeError::ParseTimeout(job.target.timeout))
        }
        Some(Err(e)) => Err(e),
        Some(Ok(_)) if job.stop.load(Ordering::Relaxed) => {
            Err(ScrapeError::ParseTimeout(job.target.timeout))
        }
        Some(Ok((batch, scraped))) => {
            let mut done = append(cache, batch, job);
            done.scraped = scraped;
            Ok(done)
        }
    };
    mark_stale(cache, job);
    // As Prometheus: a scrape with samples flushes what it did not have (series churn,
    // other spellings of a series); a failed or empty one says little.
    if result.as_ref().is_ok_and(|done| done.scraped > 0) {
        cache.evict();
    }
    (result, parsed)
}

/// One sample to append: its cache slot, value and explicit timestamp.
type Batch = Vec<(u32, Value, Option<i64>)>;

/// Parses `body`, finds or makes each sample's cache entry, and checks the sample limit
/// (a native histogram is one sample) and the native histogram limits.
fn resolve(
    cache: &mut ScrapeCache,
    body: &[u8],
    format: BodyFormat,
    job: &Job<'_>,
) -> Result<(Batch, usize), ScrapeError> {
    let mut batch = Vec::with_capacity(cache.index.len());
    let iter = cache.iter;
    // Where the entry of the next line is most likely: after the previous line's.
    let mut next = 0usize;
    let mut one = |series: &str,
                   labels: &dyn Fn() -> Result<Labels, ScrapeError>,
                   value: Value,
                   ts: Option<i64>|
     -> Result<(), ScrapeError> {
        let key = TextKey::of(series);
        let slot = match cache.find(key, next) {
            Some(slot) => slot,
            None => {
                let labels = labels()?;
                // A series of many labels costs as much again to merge, relabel and check:
                // look at the deadline before that work, not only between lines.
                if job.stop.load(Ordering::Relaxed) {
                    return Err(ScrapeError::ParseTimeout(job.target.timeout));
                }
                let state = new_state(labels, job.target, job.opts)?;
                cache.insert(key, state)
            }
        };
        next = slot as usize + 1;
        let entry = &mut cache.entries[slot as usize];
        entry.used = iter;
        if !matches!(entry.state, State::Dropped) {
            let value = match value {
                Value::Histogram(mut h) => {
                    limit_histogram(&mut h, job.opts, entry.state.labels())?;
                    Value::Histogram(h)
                }
                v => v,
            };
            let ts = ts.filter(|_| job.opts.honor_timestamps);
            batch.push((slot, value, ts));
        }
        Ok(())
    };
    let scraped = match format {
        BodyFormat::Protobuf => {
            protobuf::for_each_sample(body, job.opts.histograms, job.stop, |mut s| {
                let value = std::mem::replace(&mut s.value, Value::Float(0.0));
                let labels = || s.labels().map_err(ScrapeError::from);
                one(s.series, &labels, value, s.timestamp_ms)
            })?
        }
        BodyFormat::Text(format) => {
            let text = std::str::from_utf8(body).map_err(|_| ScrapeError::NotUtf8)?;
            let mut nhcb = job.opts.histograms.nhcb.then(TextConverter::default);
            let keep_classic = job.opts.histograms.always_classic;
            // Samples handed on: with the conversion, a histogram counts once and its
            // classic series not at all unless kept, as Prometheus counts them.
            let mut scraped = 0;
            textparse::for_each_sample(text, format, job.stop, |raw| {
                if let Some(conv) = nhcb.as_mut() {
                    let (done, part) = conv.feed(&raw)?;
                    if let Some(c) = done {
                        store_converted(c, &mut one)?;
                        scraped += 1;
                    }
                    if part && !keep_classic {
                        return Ok(());
                    }
                }
                let labels = || raw.labels().map_err(ScrapeError::from);
                scraped += 1;
                one(
                    raw.series,
                    &labels,
                    Value::Float(raw.value),
                    raw.timestamp_ms,
                )
            })?;
            if let Some(c) = nhcb.as_mut().and_then(TextConverter::finish) {
                store_converted(c, &mut one)?;
                scraped += 1;
            }
            scraped
        }
    };
    let limit = job.opts.sample_limit;
    if limit > 0 && batch.len() > limit {
        return Err(ScrapeError::SampleLimit(batch.len(), limit));
    }
    Ok((batch, scraped))
}

/// Hands a histogram converted from classic series to `one` (of [`resolve`]).
fn store_converted(
    c: Converted,
    one: &mut impl FnMut(
        &str,
        &dyn Fn() -> Result<Labels, ScrapeError>,
        Value,
        Option<i64>,
    ) -> Result<(), ScrapeError>,
) -> Result<(), ScrapeError> {
    let Converted {
        key,
        labels,
        histogram,
        timestamp_ms,
    } = c;
    let labels = move || Ok(labels.clone());
    one(
        &key,
        &labels,
        Value::Histogram(Box::new(histogram)),
        timestamp_ms,
    )
}

/// `native_histogram_min_bucket_factor` and `native_histogram_bucket_limit`, as
/// Prometheus applies them: the schema is lowered to the factor's, then halved until the
/// buckets fit the limit; a histogram that does not fit at the lowest schema fails the
/// scrape.
fn limit_histogram(
    h: &mut FloatHistogram,
    opts: &LoopOptions,
    series: Option<&Labels>,
) -> Result<(), ScrapeError> {
    if h.schema > opts.max_schema {
        h.reduce_resolution(opts.max_schema);
        h.compact();
    }
    let limit = opts.bucket_limit;
    if limit == 0 {
        return Ok(());
    }
    while h.positive.len() + h.negative.len() > limit {
        if h.schema <= MIN_SCHEMA {
            return Err(ScrapeError::BucketLimit(format!(
                "{} has {} buckets at schema {}, more than native_histogram_bucket_limit {limit}",
                series.map(|l| l.to_string()).unwrap_or_default(),
                h.positive.len() + h.negative.len(),
                h.schema
            )));
        }
        h.reduce_resolution(h.schema - 1);
        h.compact();
    }
    Ok(())
}

/// What a series line seen for the first time becomes: its labels merged with the target's,
/// relabelled, and checked against the label limits.
fn new_state(scraped: Labels, target: &Target, opts: &LoopOptions) -> Result<State, ScrapeError> {
    let merged = merge_target_labels(&scraped, &target.labels, opts.honor_labels);
    let Some(relabelled) = relabel::process(&merged, &opts.metric_relabel) else {
        return Ok(State::Dropped);
    };
    if relabelled.metric_name().is_none() {
        return Ok(State::Dropped);
    }
    check_label_limits(&relabelled, opts)?;
    Ok(State::Pending(Box::new(relabelled)))
}

/// Appends the batch, storing pending series first.
fn append(cache: &mut ScrapeCache, batch: Batch, job: &Job<'_>) -> Ingested {
    let mut done = Ingested {
        post_relabel: batch.len(),
        ..Ingested::default()
    };
    let iter = cache.iter;
    let track_carried = !cache.carried.is_empty();
    for (slot, v, ts) in batch {
        let entry = &mut cache.entries[slot as usize];
        if let State::Pending(labels) = &entry.state
            && let Ok(r) = job.storage.series_ref(labels)
        {
            entry.state = State::Stored(r);
        }
        let t = ts.unwrap_or(job.t);
        let result = match (&mut entry.state, v) {
            (State::Stored(r), Value::Float(v)) => job.storage.append_ref(r, t, v),
            (State::Pending(labels), Value::Float(v)) => job.storage.append(labels, t, v),
            (State::Stored(r), Value::Histogram(h)) => {
                job.storage.append_histogram(r.labels(), t, Arc::new(*h))
            }
            (State::Pending(labels), Value::Histogram(h)) => {
                job.storage.append_histogram(labels, t, Arc::new(*h))
            }
            (State::Dropped, _) => continue,
        };
        match result {
            Ok(()) => done.stored += 1,
            Err(e) => count_error(&e, job.metrics, &mut done),
        }
        if ts.is_none() {
            let in_last = entry.tracked != 0 && entry.tracked.wrapping_add(1) == iter;
            let carried = track_carried && was_carried(&cache.carried, entry);
            if !in_last && !carried {
                done.added += 1;
            }
            entry.tracked = iter;
        }
    }
    done
}

fn was_carried(carried: &HashSet<Labels>, entry: &Entry) -> bool {
    entry.state.labels().is_some_and(|l| carried.contains(l))
}

fn count_error(e: &AppendError, metrics: &ScrapeMetrics, done: &mut Ingested) {
    match e {
        AppendError::OutOfOrder { .. }
        | AppendError::DuplicateTimestamp { .. }
        | AppendError::OutOfBounds { .. } => {
            metrics.out_of_order.inc();
        }
        e => {
            if let AppendError::SeriesLimit { limit, .. } = e {
                done.refused += 1;
                done.series_limit = *limit;
            }
            crate::limits::count_append_error(e);
        }
    }
}

/// Stale markers at `job.t` for the series the previous scrape wrote and this one did not
/// (all of them when this scrape failed), and for the series a previous loop carried over.
fn mark_stale(cache: &mut ScrapeCache, job: &Job<'_>) {
    let iter = cache.iter;
    for entry in &mut cache.entries {
        if entry.tracked == 0 || entry.tracked.wrapping_add(1) != iter {
            continue;
        }
        let _ = match &mut entry.state {
            State::Stored(r) => job.storage.append_ref(r, job.t, STALE_NAN),
            State::Pending(labels) => job.storage.append(labels, job.t, STALE_NAN),
            State::Dropped => continue,
        };
    }
    if cache.carried.is_empty() {
        return;
    }
    let carried = std::mem::take(&mut cache.carried);
    let mut current: HashSet<&Labels> = cache
        .entries
        .iter()
        .filter(|e| e.tracked == iter)
        .filter_map(|e| e.state.labels())
        .collect();
    let report = report_labels(job.target);
    current.extend(report.iter());
    for gone in carried.iter().filter(|l| !current.contains(l)) {
        let _ = job.storage.append(gone, job.t, STALE_NAN);
    }
}

/// The names of the series every scrape writes about itself.
pub(crate) const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// The labels of a target's report series, in [`REPORT_SERIES`] order.
pub(crate) fn report_labels(target: &Target) -> Vec<Labels> {
    REPORT_SERIES
        .iter()
        .map(|name| {
            let mut l = target.labels.clone();
            l.set(METRIC_NAME, name);
            l
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lookout_promql::histogram::CounterResetHint;
    use lookout_promql::storage::{Queryable, SeriesData, StorageOptions, is_stale};
    use promql_parser::label::{MatchOp, Matcher};

    use super::*;
    use crate::scrape_config::ScrapeConfig;

    fn target() -> Target {
        Target {
            job: "j".into(),
            labels: Labels::new([("job", "j"), ("instance", "h:1")]),
            discovered: Labels::new([("job", "j")]),
            url: "http://127.0.0.1:1/metrics".into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        }
    }

    fn opts(yaml: &str) -> LoopOptions {
        let cfg: ScrapeConfig = serde_yaml_ng::from_str(yaml).expect("scrape config");
        LoopOptions::from_config(&cfg, &crate::scrape_config::ScrapeDefaults::default())
    }

    struct Fixture {
        storage: Storage,
        metrics: ScrapeMetrics,
        target: Target,
        opts: LoopOptions,
        cache: ScrapeCache,
        stop: AtomicBool,
    }

    impl Fixture {
        fn new(opts_yaml: &str) -> Fixture {
            Fixture {
                storage: Storage::new(StorageOptions::default()),
                metrics: ScrapeMetrics::default(),
                target: target(),
                opts: opts(opts_yaml),
                cache: ScrapeCache::default(),
                stop: AtomicBool::new(false),
            }
        }

        fn scrape(&mut self, body: Option<&str>, t: i64) -> Result<Ingested, ScrapeError> {
            let job = Job {
                target: &self.target,
                opts: &self.opts,
                storage: &self.storage,
                metrics: &self.metrics,
                t,
                stop: &self.stop,
            };
            let text = super::super::textparse::Format::PrometheusText;
            let body = body.map(|b| (b.as_bytes().to_vec(), BodyFormat::Text(text)));
            ingest(&mut self.cache, body, &job).0
        }

        fn scrape_proto(&mut self, body: &[u8], t: i64) -> Result<Ingested, ScrapeError> {
            let job = Job {
                target: &self.target,
                opts: &self.opts,
                storage: &self.storage,
                metrics: &self.metrics,
                t,
                stop: &self.stop,
            };
            let body = Some((body.to_vec(), BodyFormat::Protobuf));
            ingest(&mut self.cache, body, &job).0
        }

        /// The histograms of the one series named `name`, and its float samples (stale
        /// markers as `None`).
        fn histograms(&self, name: &str) -> (Vec<FloatHistogram>, Vec<Option<f64>>) {
            let s = self.select(name);
            assert_eq!(s.len(), 1, "{name}: {s:?}");
            let floats = s[0]
                .samples
                .iter()
                .map(|s| (!is_stale(s.v)).then_some(s.v))
                .collect();
            let hists = s[0].histograms.iter().map(|p| (*p.h).clone()).collect();
            (hists, floats)
        }

        fn select(&self, name: &str) -> Vec<SeriesData> {
            let m = Matcher::new(MatchOp::Equal, "__name__", name);
            self.storage.select(&[m], 0, i64::MAX)
        }

        /// The values of the one series named `name`, stale markers as `None`.
        fn values(&self, name: &str) -> Vec<Option<f64>> {
            let s = self.select(name);
            assert_eq!(s.len(), 1, "{name}: {s:?}");
            s[0].samples
                .iter()
                .map(|s| (!is_stale(s.v)).then_some(s.v))
                .collect()
        }
    }

    const JOB: &str = "job_name: j";

    /// The layout the module's doc comment counts: a 40-byte entry, a 4-byte slot.
    #[test]
    fn entries_stay_small() {
        assert_eq!(size_of::<State>(), 16);
        assert!(size_of::<Entry>() <= 40, "{}", size_of::<Entry>());
    }

    #[test]
    fn a_cached_line_stores_what_a_new_one_does() {
        let mut f = Fixture::new(
            "job_name: j\nmetric_relabel_configs:\n  - {source_labels: [__name__], regex: dropped, action: drop}\n  - {target_label: extra, replacement: x}",
        );
        let body = "a{k=\"v\"} 1\ndropped 5\nb 2\n";
        for t in [1000, 2000, 3000] {
            let done = f.scrape(Some(body), t).expect("scrape");
            assert_eq!((done.scraped, done.post_relabel, done.stored), (3, 2, 2));
            assert_eq!(done.added, if t == 1000 { 2 } else { 0 });
        }
        assert_eq!(f.values("a"), [Some(1.0); 3]);
        let a = &f.select("a")[0].labels;
        assert_eq!(
            a,
            &Labels::new([
                ("__name__", "a"),
                ("k", "v"),
                ("job", "j"),
                ("instance", "h:1"),
                ("extra", "x")
            ])
        );
        assert!(f.select("dropped").is_empty());
        // Two texts, three entries: the dropped one is cached too.
        assert_eq!(f.cache.index.len(), 3);
    }

    #[test]
    fn vanished_series_and_failed_scrapes_are_marked_stale() {
        let mut f = Fixture::new(JOB);
        f.scrape(Some("a 1\nb 2\n"), 1000).expect("scrape");
        f.scrape(Some("a 1\n"), 2000).expect("scrape");
        assert_eq!(f.values("b"), [Some(2.0), None]);
        // A failed scrape (no body) marks everything of the previous one stale, once.
        f.scrape(None, 3000).expect("no body");
        f.scrape(None, 4000).expect("no body");
        assert_eq!(f.values("a"), [Some(1.0), Some(1.0), None]);
        // Back: counted as added again, no stale marker for b (already stale).
        let done = f.scrape(Some("a 3\n"), 5000).expect("scrape");
        assert_eq!(done.added, 1);
        assert_eq!(f.values("a"), [Some(1.0), Some(1.0), None, Some(3.0)]);
        assert_eq!(f.values("b"), [Some(2.0), None]);
    }

    #[test]
    fn samples_with_timestamps_are_not_marked_stale() {
        let mut f = Fixture::new(JOB);
        f.scrape(Some("a 1 500\n"), 1000).expect("scrape");
        f.scrape(Some(""), 2000).expect("scrape");
        assert_eq!(f.values("a"), [Some(1.0)]);
    }

    #[test]
    fn limits_store_nothing_of_the_scrape() {
        let mut f = Fixture::new("job_name: j\nsample_limit: 2\nlabel_limit: 3");
        f.scrape(Some("a 1\n"), 1000).expect("scrape");
        let err = f.scrape(Some("a 2\nb 1\nc 1\n"), 2000);
        assert!(
            matches!(err, Err(ScrapeError::SampleLimit(3, 2))),
            "{err:?}"
        );
        let err = f.scrape(Some("a 3\nd{x=\"1\",y=\"2\"} 1\n"), 3000);
        assert!(matches!(err, Err(ScrapeError::LabelLimit(_))), "{err:?}");
        // Nothing of the failed scrapes; a marked stale by the first failure.
        assert_eq!(f.values("a"), [Some(1.0), None]);
        assert!(f.select("b").is_empty() && f.select("d").is_empty());
        // The cached line of the failed scrape still works.
        f.scrape(Some("a 4\n"), 4000).expect("scrape");
        assert_eq!(f.values("a"), [Some(1.0), None, Some(4.0)]);
    }

    #[test]
    fn carried_series_are_stale_only_when_the_first_scrape_lacks_them() {
        let mut f = Fixture::new(JOB);
        let old = |name: &str| Labels::new([("__name__", name), ("job", "j"), ("instance", "h:1")]);
        f.storage.append(&old("a"), 500, 1.0).expect("append");
        f.storage.append(&old("gone"), 500, 1.0).expect("append");
        f.cache = ScrapeCache::new([old("a"), old("gone"), old("up")].into_iter().collect());
        assert_eq!(f.cache.last_series().len(), 3);
        let done = f.scrape(Some("a 2\n"), 1000).expect("scrape");
        assert_eq!(done.added, 0, "a was carried over");
        assert_eq!(f.values("a"), [Some(1.0), Some(2.0)]);
        assert_eq!(f.values("gone"), [Some(1.0), None]);
        assert!(f.cache.carried.is_empty());
    }

    #[test]
    fn unseen_entries_leave_the_cache() {
        let mut f = Fixture::new(JOB);
        f.scrape(Some("a 1\nb 1\n"), 1000).expect("scrape");
        // A failed or empty scrape keeps the entries.
        f.scrape(None, 2000).expect("no body");
        f.scrape(Some(""), 3000).expect("empty");
        assert_eq!(f.cache.index.len(), 2);
        f.scrape(Some("a 1\n"), 4000).expect("scrape");
        assert_eq!(f.cache.index.len(), 1);
        assert_eq!(f.cache.free.len(), 1);
        // The freed slot is reused.
        f.scrape(Some("a 1\nc 1\n"), 30_000).expect("scrape");
        assert_eq!((f.cache.index.len(), f.cache.entries.len()), (2, 2));
        assert_eq!(f.values("c"), [Some(1.0)]);
    }

    #[test]
    fn lines_in_a_new_order_or_back_after_eviction_find_their_own_entries() {
        let mut f = Fixture::new(JOB);
        f.scrape(Some("a 1\nb 2\nc 3\n"), 1000).expect("scrape");
        // The order changes: the guess (the entry after the previous line's) misses.
        f.scrape(Some("c 13\nb 12\na 11\n"), 16_000)
            .expect("scrape");
        // b leaves; its freed slot, right after a's, keeps b's key but is no guess.
        f.scrape(Some("a 21\nc 23\n"), 31_000).expect("scrape");
        assert_eq!(f.cache.free.len(), 1);
        f.scrape(Some("a 31\nb 32\nd 34\nc 33\n"), 46_000)
            .expect("scrape");
        assert!(f.cache.free.is_empty());
        assert_eq!(f.cache.index.len(), 4);
        assert_eq!(
            f.values("a"),
            [Some(1.0), Some(11.0), Some(21.0), Some(31.0)]
        );
        assert_eq!(
            f.values("c"),
            [Some(3.0), Some(13.0), Some(23.0), Some(33.0)]
        );
        assert_eq!(f.values("d"), [Some(34.0)]);
        // None: b's stale marker when it left.
        assert_eq!(f.values("b"), [Some(2.0), Some(12.0), None, Some(32.0)]);
    }

    const NATIVE_JOB: &str = "job_name: j\nscrape_native_histograms: true";

    fn native_body(name: &str, native: protobuf::testbody::NativeParts) -> Vec<u8> {
        use protobuf::testbody::{family, histogram, metric};
        let h = histogram(6, 3.0, &[(1.0, 3)], Some(native));
        family(name, 4, &[metric(&[], 7, &h)])
    }

    #[test]
    fn native_histograms_are_stored_counted_as_one_sample_and_marked_stale() {
        use protobuf::testbody::{NATIVE, double, family, metric};
        let mut f = Fixture::new(&format!("{NATIVE_JOB}\nsample_limit: 2"));
        let mut body = native_body("h", NATIVE);
        body.extend(family("g", 1, &[metric(&[], 2, &double(1.0))]));
        let done = f.scrape_proto(&body, 1000).expect("scrape");
        assert_eq!((done.scraped, done.post_relabel, done.added), (2, 2, 2));
        let done = f.scrape_proto(&body, 2000).expect("scrape");
        assert_eq!((done.scraped, done.stored, done.added), (2, 2, 0));
        let (hists, floats) = f.histograms("h");
        assert_eq!(hists.len(), 2);
        assert_eq!((hists[0].count, hists[0].zero_count), (6.0, 1.0));
        assert!(floats.is_empty());
        // The histogram goes away: a stale marker follows it.
        let gauge_only = family("g", 1, &[metric(&[], 2, &double(1.0))]);
        f.scrape_proto(&gauge_only, 3000).expect("scrape");
        let (hists, floats) = f.histograms("h");
        assert_eq!((hists.len(), floats), (2, vec![None]));
        // Classic buckets too: over the sample limit of 2.
        f.opts.histograms.always_classic = true;
        let err = f.scrape_proto(&body, 4000);
        assert!(
            matches!(err, Err(ScrapeError::SampleLimit(6, 2))),
            "{:?}",
            err.map(|d| d.stored)
        );
    }

    #[test]
    fn bucket_limits_lower_the_resolution_or_fail_the_scrape() {
        use protobuf::testbody::NATIVE;
        // Buckets 0, 1 and 5 at schema 0: 2 buckets at schema -1 (0 and 1 → 0, 1; 5 → 3)…
        let mut f = Fixture::new(&format!("{NATIVE_JOB}\nnative_histogram_bucket_limit: 2"));
        f.scrape_proto(&native_body("h", NATIVE), 1000)
            .expect("reduced");
        let (hists, _) = f.histograms("h");
        assert!(hists[0].schema < 0, "{:?}", hists[0]);
        assert!(hists[0].positive.len() <= 2);
        assert_eq!(hists[0].count, 6.0);
        // …and never to one bucket below schema -4 of a wide histogram.
        let wide = protobuf::testbody::NativeParts {
            spans: &[(-60, 1), (119, 1)],
            deltas: &[1, 0],
            ..NATIVE
        };
        let mut f = Fixture::new(&format!("{NATIVE_JOB}\nnative_histogram_bucket_limit: 1"));
        let err = f.scrape_proto(&native_body("w", wide), 1000);
        let Err(ScrapeError::BucketLimit(why)) = err else {
            panic!("{:?}", err.map(|d| d.stored))
        };
        assert!(
            why.contains("more than native_histogram_bucket_limit 1"),
            "{why}"
        );
        assert!(f.select("w").is_empty());
        // The bucket factor lowers the schema before the limit is looked at.
        let mut f = Fixture::new(&format!(
            "{NATIVE_JOB}\nnative_histogram_min_bucket_factor: 2"
        ));
        let fine = protobuf::testbody::NativeParts {
            schema: 3,
            ..NATIVE
        };
        f.scrape_proto(&native_body("h", fine), 1000)
            .expect("scrape");
        assert_eq!(f.histograms("h").0[0].schema, 0);
    }

    #[test]
    fn without_native_histograms_a_protobuf_histogram_is_classic() {
        use protobuf::testbody::NATIVE;
        let mut f = Fixture::new(JOB);
        let done = f
            .scrape_proto(&native_body("h", NATIVE), 1000)
            .expect("scrape");
        assert_eq!(done.scraped, 4);
        assert_eq!(f.values("h_count"), [Some(6.0)]);
        assert_eq!(f.select("h_bucket").len(), 2);
        assert!(f.select("h").is_empty());
    }

    /// A parse stopped by the deadline is the scrape's timeout, not a parse error of the
    /// target's body, and stores nothing.
    #[test]
    fn a_stopped_parse_stores_nothing() {
        let mut f = Fixture::new(JOB);
        f.stop.store(true, Ordering::Relaxed);
        let err = f.scrape(Some("a 1\n"), 1000);
        assert!(
            matches!(err, Err(ScrapeError::ParseTimeout(_))),
            "{:?}",
            err.map(|d| d.stored)
        );
        assert!(f.select("a").is_empty());
    }

    const NHCB_JOB: &str = "job_name: j\nconvert_classic_histograms_to_nhcb: true";

    fn classic_text(buckets: &[(&str, f64)], count: f64, sum: f64) -> String {
        let mut body = String::from("# HELP g A gauge.\n# TYPE g gauge\ng 1\n# TYPE h histogram\n");
        for (le, c) in buckets {
            body.push_str(&format!("h_bucket{{a=\"x\",le=\"{le}\"}} {c}\n"));
        }
        body.push_str(&format!(
            "h_count{{a=\"x\"}} {count}\nh_sum{{a=\"x\"}} {sum}\n"
        ));
        body
    }

    fn counts(h: &FloatHistogram) -> Vec<(i32, f64)> {
        h.positive.iter().map(|b| (b.index, b.count)).collect()
    }

    #[test]
    fn classic_text_histograms_become_custom_bucket_histograms() {
        let mut f = Fixture::new(NHCB_JOB);
        let body = classic_text(&[("0.5", 1.0), ("1", 3.0), ("+Inf", 4.0)], 4.0, 2.5);
        let done = f.scrape(Some(&body), 1000).expect("scrape");
        // The gauge and one histogram, as Prometheus counts scrape_samples_scraped.
        assert_eq!((done.scraped, done.stored, done.added), (2, 2, 2));
        let s = f.select("h");
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].labels,
            Labels::new([
                ("__name__", "h"),
                ("a", "x"),
                ("job", "j"),
                ("instance", "h:1")
            ])
        );
        let (hists, _) = f.histograms("h");
        assert_eq!(&*hists[0].custom_values, &[0.5, 1.0]);
        assert_eq!(counts(&hists[0]), vec![(0, 1.0), (1, 2.0), (2, 1.0)]);
        assert_eq!((hists[0].count, hists[0].sum), (4.0, 2.5));
        for classic in ["h_bucket", "h_count", "h_sum"] {
            assert!(f.select(classic).is_empty(), "{classic}");
        }
        // A bucket added between scrapes: the next histogram has its bound.
        let body = classic_text(&[("0.5", 1.0), ("0.75", 2.0), ("1", 3.0)], 5.0, 3.0);
        f.scrape(Some(&body), 2000).expect("scrape");
        let (hists, _) = f.histograms("h");
        assert_eq!(&*hists[1].custom_values, &[0.5, 0.75, 1.0]);
        // No +Inf bucket: it takes the count.
        assert_eq!(
            counts(&hists[1]),
            vec![(0, 1.0), (1, 1.0), (2, 1.0), (3, 2.0)]
        );
        // The histogram goes away: a stale marker follows it.
        f.scrape(Some("# TYPE g gauge\ng 1\n"), 3000)
            .expect("scrape");
        assert_eq!(f.histograms("h"), (hists, vec![None]));
    }

    #[test]
    fn classic_series_are_kept_only_with_always_scrape_classic_histograms() {
        let mut f = Fixture::new(&format!(
            "{NHCB_JOB}\nalways_scrape_classic_histograms: true"
        ));
        let body = classic_text(&[("1", 3.0), ("+Inf", 4.0)], 4.0, 2.5);
        let done = f.scrape(Some(&body), 1000).expect("scrape");
        assert_eq!(done.scraped, 6);
        assert_eq!(f.histograms("h").0.len(), 1);
        assert_eq!(f.select("h_bucket").len(), 2);
        assert_eq!(f.values("h_count"), [Some(4.0)]);
    }

    #[test]
    fn inconsistent_or_untyped_classic_histograms_do_not_convert() {
        let mut f = Fixture::new(NHCB_JOB);
        // Not cumulative: no histogram, and its classic series are not stored either.
        let body = classic_text(&[("0.5", 3.0), ("1", 2.0)], 3.0, 1.0);
        let done = f.scrape(Some(&body), 1000).expect("scrape");
        assert_eq!(done.scraped, 1);
        assert!(f.select("h").is_empty() && f.select("h_bucket").is_empty());
        // A count that is not the +Inf bucket's.
        let body = classic_text(&[("1", 2.0), ("+Inf", 3.0)], 4.0, 1.0);
        f.scrape(Some(&body), 2000).expect("scrape");
        assert!(f.select("h").is_empty());
        // Series of a family not typed histogram stay float series.
        let body = "# TYPE u untyped\nu_bucket{le=\"1\"} 1\nu_count 1\nu_sum 2\n\
                    # TYPE h histogram\nother_bucket{le=\"1\"} 1\n";
        let done = f.scrape(Some(body), 3000).expect("scrape");
        assert_eq!(done.scraped, 4);
        assert_eq!(f.values("u_bucket"), [Some(1.0)]);
        assert_eq!(f.values("other_bucket"), [Some(1.0)]);
        assert!(f.select("u").is_empty());
    }

    #[test]
    fn label_sets_and_comments_split_classic_histograms() {
        let mut f = Fixture::new(NHCB_JOB);
        let body = "# TYPE h histogram\n\
                    h_bucket{a=\"1\",le=\"1\"} 1\nh_count{a=\"1\"} 1\nh_sum{a=\"1\"} 1\n\
                    h_bucket{a=\"2\",le=\"1\"} 2\nh_count{a=\"2\"} 2\n# a comment\nh_sum{a=\"2\"} 5\n";
        let done = f.scrape(Some(body), 1000).expect("scrape");
        // a=1, a=2 (buckets and count), a=2 again (the sum after the comment): the last
        // two share a series and a timestamp, so the second is refused.
        assert_eq!(done.scraped, 3);
        let s = f.select("h");
        assert_eq!(s.len(), 2);
        let two = s.iter().find(|s| s.labels.get("a") == Some("2")).unwrap();
        assert_eq!(two.histograms.len(), 1);
        assert_eq!(
            (two.histograms[0].h.count, two.histograms[0].h.sum),
            (2.0, 0.0)
        );
    }

    #[test]
    fn custom_bucket_histograms_over_the_bucket_limit_fail_the_scrape() {
        let mut f = Fixture::new(&format!("{NHCB_JOB}\nnative_histogram_bucket_limit: 2"));
        let body = classic_text(&[("0.5", 1.0), ("1", 3.0), ("+Inf", 4.0)], 4.0, 2.5);
        let err = f.scrape(Some(&body), 1000);
        assert!(
            matches!(err, Err(ScrapeError::BucketLimit(_))),
            "{:?}",
            err.map(|d| d.stored)
        );
        assert!(f.select("h").is_empty() && f.select("g").is_empty());
    }

    #[test]
    fn protobuf_classic_histograms_convert_and_native_ones_do_not() {
        use protobuf::testbody::{NATIVE, family, histogram, metric};
        let mut f = Fixture::new(NHCB_JOB);
        let classic = histogram(6, 3.0, &[(1.0, 2), (2.0, 5)], None);
        let mut body = family("c", 4, &[metric(&[("a", "x")], 7, &classic)]);
        body.extend(family("gh", 5, &[metric(&[], 7, &classic)]));
        let done = f.scrape_proto(&body, 1000).expect("scrape");
        assert_eq!(done.scraped, 2);
        let (hists, _) = f.histograms("c");
        assert_eq!(&*hists[0].custom_values, &[1.0, 2.0]);
        assert_eq!(counts(&hists[0]), vec![(0, 2.0), (1, 3.0), (2, 1.0)]);
        assert_eq!(hists[0].counter_reset_hint, CounterResetHint::Unknown);
        assert_eq!(
            f.histograms("gh").0[0].counter_reset_hint,
            CounterResetHint::Gauge
        );
        assert!(f.select("c_bucket").is_empty());
        // A histogram with native buckets stays exponential; its classic buckets are
        // stored as classic series only when kept.
        let mut f = Fixture::new(&format!(
            "{NHCB_JOB}\nscrape_native_histograms: true\nalways_scrape_classic_histograms: true"
        ));
        f.scrape_proto(&native_body("n", NATIVE), 1000)
            .expect("scrape");
        assert_eq!(f.histograms("n").0[0].schema, NATIVE.schema as i32);
        assert_eq!(f.select("n_bucket").len(), 2);
        // Data that does not convert fails the scrape, as in Prometheus's protobuf parser.
        let bad = histogram(1, 3.0, &[(1.0, 2), (2.0, 1)], None);
        let mut f = Fixture::new(NHCB_JOB);
        let err = f.scrape_proto(&family("c", 4, &[metric(&[], 7, &bad)]), 1000);
        assert!(
            matches!(err, Err(ScrapeError::Protobuf(_))),
            "{:?}",
            err.map(|d| d.stored)
        );
    }
}
