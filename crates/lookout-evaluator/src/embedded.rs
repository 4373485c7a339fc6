//! The embedded datasource (the default): rule expressions are evaluated by
//! `lookout_promql::Engine` over the in-process storage the scraper fills, and rule outputs
//! (recording rules, `ALERTS`, `ALERTS_FOR_STATE`, staleness markers) are written to the same
//! storage so later rules, `/api/v1/query` and Grafana see them.
//!
//! Each distinct expression text is parsed once (a bounded [`ParseCache`]): rules evaluate
//! the same texts at every interval, and parsing (promql-parser compiles every regex
//! matcher) cost more than evaluating many of them.
//!
//! Queries run on tokio's blocking pool: evaluation is CPU-bound and must not stall the
//! scrape loops and the notifier on the async workers. The runtime's threads need
//! `lookout_promql::engine::depth::EVAL_STACK_BYTES` of stack (evaluation recurses up to
//! `--query.max-depth` levels); a query whose waiter is dropped is cancelled.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lookout_promql::engine::{self, Engine, ParseCache, QueryControl, QueryError, Value};
use lookout_promql::storage::{Queryable, Storage};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::Expr;

use crate::datasource::{Datasource, DatasourceError, DatasourceFuture, QuerySample, TimedSample};
use crate::scrape::target::to_ms;

/// A [`Datasource`] over the in-process storage.
#[derive(Clone)]
pub struct EmbeddedDatasource {
    storage: Arc<Storage>,
    engine: Engine,
    /// Parsed expressions by text, shared by the clones of this datasource.
    parsed: Arc<ParseCache>,
    /// Run queries on the calling task instead of the blocking pool.
    inline: bool,
}

/// Parses `text` (or takes it from `parsed`) and evaluates it at `t_ms`.
fn run_query(
    engine: &Engine,
    parsed: &ParseCache,
    storage: &Storage,
    text: &str,
    t_ms: i64,
    control: &QueryControl,
) -> Result<Value, QueryError> {
    let expr = parsed.parse(text)?;
    let storage = storage as &dyn Queryable;
    Ok(engine
        .exec_instant_with(storage, &expr, text, t_ms, control)?
        .value)
}

fn query_error(expr: &str, e: QueryError) -> DatasourceError {
    crate::limits::count_query_error(&e);
    DatasourceError::Query {
        expr: expr.to_string(),
        message: e.to_string(),
    }
}

/// The label matchers of a plain vector selector such as `ALERTS_FOR_STATE{alertname="X"}`.
pub fn selector_matchers(selector: &str) -> Result<Vec<Matcher>, String> {
    let expr = engine::parse(selector).map_err(|e| e.to_string())?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("{selector:?} is not a vector selector"));
    };
    if !vs.matchers.or_matchers.is_empty() {
        return Err(format!(
            "{selector:?}: 'or' matchers are not supported here"
        ));
    }
    let mut out = vs.matchers.matchers.clone();
    if let Some(name) = &vs.name {
        out.push(Matcher::new(MatchOp::Equal, "__name__", name));
    }
    Ok(out)
}

impl EmbeddedDatasource {
    /// A datasource evaluating with `engine` over `storage`.
    pub fn new(storage: Arc<Storage>, engine: Engine) -> EmbeddedDatasource {
        let parsed = Arc::new(ParseCache::new(engine.options().max_depth));
        EmbeddedDatasource {
            storage,
            engine,
            parsed,
            inline: false,
        }
    }

    /// Runs queries on the calling task instead of tokio's blocking pool: for callers that
    /// evaluate nothing else concurrently (`lookout rules test`), where the hand-off to
    /// another thread per query costs more than it saves.
    pub fn with_inline_queries(mut self) -> EmbeddedDatasource {
        self.inline = true;
        self
    }

    /// The storage (shared with the scraper and the web API).
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Datasource for EmbeddedDatasource {
    fn query<'a>(
        &'a self,
        expr: &'a str,
        at: SystemTime,
    ) -> DatasourceFuture<'a, Vec<QuerySample>> {
        Box::pin(async move {
            let t_ms = to_ms(at);
            // The engine's `--query.timeout` bounds the evaluation; the guard stops it too
            // when this future is dropped (a rule group stopped by a reload or shutdown).
            let control = QueryControl::new();
            let _cancel = control.cancel_on_drop();
            let result = if self.inline {
                run_query(
                    &self.engine,
                    &self.parsed,
                    &self.storage,
                    expr,
                    t_ms,
                    &control,
                )
            } else {
                let (storage, engine) = (self.storage.clone(), self.engine.clone());
                let (parsed, text) = (self.parsed.clone(), expr.to_string());
                tokio::task::spawn_blocking(move || {
                    run_query(&engine, &parsed, &storage, &text, t_ms, &control)
                })
                .await
                .map_err(|e| DatasourceError::Unavailable(format!("query task failed: {e}")))?
            };
            match result.map_err(|e| query_error(expr, e))? {
                Value::Vector(v) => Ok(v
                    .into_iter()
                    .map(|s| QuerySample {
                        labels: s.metric,
                        value: s.f,
                        histogram: s.h,
                    })
                    .collect()),
                Value::Scalar { v, .. } => Ok(vec![QuerySample {
                    labels: lookout_promql::Labels::default(),
                    value: v,
                    histogram: None,
                }]),
                other => Err(DatasourceError::UnexpectedResult {
                    expr: expr.to_string(),
                    kind: other.type_name().to_string(),
                }),
            }
        })
    }

    fn append(&self, samples: &[QuerySample], at: SystemTime) -> Result<(), DatasourceError> {
        let t_ms = to_ms(at);
        let mut failed = 0usize;
        let mut first = None;
        for s in samples {
            // A histogram sample (a recording rule over native histograms) is stored as
            // one, as Prometheus's rule group does.
            let appended = match &s.histogram {
                Some(h) => self.storage.append_histogram(&s.labels, t_ms, h.clone()),
                None => self.storage.append(&s.labels, t_ms, s.value),
            };
            if let Err(e) = appended {
                crate::limits::count_append_error(&e);
                failed += 1;
                if first.is_none() {
                    first = Some(e.to_string());
                }
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(DatasourceError::Append(format!(
                "{failed} of {} samples rejected; first: {e}",
                samples.len()
            ))),
        }
    }

    fn last_samples<'a>(
        &'a self,
        selector: &'a str,
        lookback: Duration,
        at: SystemTime,
    ) -> DatasourceFuture<'a, Vec<TimedSample>> {
        Box::pin(async move {
            let matchers =
                selector_matchers(selector).map_err(|message| DatasourceError::Query {
                    expr: selector.to_string(),
                    message,
                })?;
            let maxt = to_ms(at);
            let lookback_ms = i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX);
            let mint = maxt.saturating_sub(lookback_ms).saturating_add(1);
            let series = self.storage.select(&matchers, mint, maxt);
            Ok(series
                .into_iter()
                .filter_map(|s| {
                    let last = s.samples.last()?;
                    let ts = if last.t >= 0 {
                        SystemTime::UNIX_EPOCH + Duration::from_millis(last.t as u64)
                    } else {
                        SystemTime::UNIX_EPOCH
                    };
                    Some(TimedSample {
                        labels: s.labels,
                        timestamp: ts,
                        value: last.v,
                    })
                })
                .collect())
        })
    }

    /// With a data directory, rule outputs (`ALERTS_FOR_STATE` among them) are in the
    /// write-ahead log like scraped samples, so `for` state is restored from the storage as
    /// Prometheus restores it; memory only, the state file does it.
    fn persists_rule_outputs(&self) -> bool {
        self.storage.wal_stats().is_some()
    }
}

/// Gauges read from the storage when `/metrics` is scraped: Prometheus's
/// `prometheus_tsdb_head_series` (series held now) and `lookout_storage_max_series` (the
/// `--storage.max-series` limit, 0 when unlimited), so that an alert can warn before the
/// limit is reached.
struct StorageCollector(Arc<Storage>);

impl Collector for StorageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges = [
            (
                "prometheus_tsdb_head_series",
                "Total number of series in the head block.",
                self.0.num_series(),
            ),
            (
                "lookout_storage_max_series",
                "Most series the storage holds (--storage.max-series); 0 is unlimited.",
                self.0.options().max_series,
            ),
        ];
        let gauges = gauges.map(|(n, h, v)| (n, h, u64::try_from(v).unwrap_or(u64::MAX)));
        encode_gauges(&mut encoder, &gauges)?;
        if let Some((held, free)) = lookout_promql::storage::allocator_bytes() {
            encode_gauges(
                &mut encoder,
                &[
                    (
                        "lookout_allocator_held_bytes",
                        "Bytes the memory allocator has from the system (its arenas and large allocations mapped on their own).",
                        held,
                    ),
                    (
                        "lookout_allocator_free_bytes",
                        "Of lookout_allocator_held_bytes, the bytes free for later allocations.",
                        free,
                    ),
                ],
            )?;
        }
        self.encode_blocks(&mut encoder)?;
        let Some(wal) = self.0.wal_stats() else {
            return Ok(());
        };
        let counters = [
            (
                "prometheus_tsdb_wal_corruptions",
                "Total number of WAL corruptions.",
                wal.corruptions,
            ),
            (
                "prometheus_tsdb_wal_truncations",
                "Total number of completed WAL truncations.",
                wal.truncations,
            ),
            (
                "prometheus_tsdb_wal_writes_failed",
                "Total number of WAL writes that failed.",
                wal.write_failures,
            ),
            (
                "lookout_tsdb_wal_bytes_written",
                "Bytes written to WAL segments since start.",
                wal.bytes_written,
            ),
            (
                "lookout_tsdb_wal_samples_written",
                "Samples written to the WAL since start.",
                wal.samples_written,
            ),
            (
                "lookout_tsdb_wal_corrupt_bytes_dropped",
                "Bytes of the WAL cut off at start by repairs of corrupt or torn records.",
                wal.corrupt_bytes_dropped,
            ),
        ];
        encode_counters(&mut encoder, &counters)?;
        let replay = wal.replay_duration.as_secs_f64();
        let gauges = [
            (
                "prometheus_tsdb_wal_segment_current",
                "WAL segment index that TSDB is currently writing to.",
                f64::from(wal.segment_current),
            ),
            (
                "prometheus_tsdb_data_replay_duration_seconds",
                "Time taken to replay the data on disk.",
                replay,
            ),
            (
                "lookout_tsdb_wal_replay_duration_seconds",
                "Time the WAL replay took at start (as prometheus_tsdb_data_replay_duration_seconds).",
                replay,
            ),
            (
                "lookout_tsdb_wal_replayed_samples",
                "Samples the WAL replay restored at start.",
                wal.replayed_samples as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

impl StorageCollector {
    /// Prometheus's figures of persisted blocks (nothing for a memory-only storage).
    fn encode_blocks(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(b) = self.0.block_stats() else {
            return Ok(());
        };
        encode_gauges(
            encoder,
            &[
                (
                    "prometheus_tsdb_blocks_loaded",
                    "Number of currently loaded data blocks",
                    b.blocks_loaded,
                ),
                (
                    "prometheus_tsdb_storage_blocks_bytes",
                    "The number of bytes that are currently used for local storage by all blocks.",
                    b.blocks_bytes,
                ),
                (
                    "lookout_tsdb_blocks_heap_bytes",
                    "Heap bytes the loaded blocks hold (their index and chunk files are mapped, not counted).",
                    b.blocks_heap_bytes,
                ),
                (
                    "prometheus_tsdb_retention_limit_bytes",
                    "Max number of bytes to be retained in the tsdb blocks, configured 0 means disabled",
                    b.retention_limit_bytes,
                ),
            ],
        )?;
        // A gauge of the last where Prometheus has a histogram: enough to see slow ones.
        let gauge = ConstGauge::new(b.last_compaction_seconds);
        let metric = encoder.encode_descriptor(
            "prometheus_tsdb_compaction_duration_seconds",
            "Duration of the last block write, from the head or by compaction (a gauge, not Prometheus's histogram).",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)?;
        encode_counters(
            encoder,
            &[
                (
                    "prometheus_tsdb_compactions",
                    "Total number of compactions that were executed for the partition.",
                    b.compactions,
                ),
                (
                    "prometheus_tsdb_compactions_failed",
                    "Total number of compactions that failed for the partition.",
                    b.compactions_failed,
                ),
                (
                    "prometheus_tsdb_time_retentions",
                    "The number of times that blocks were deleted because the maximum time limit was exceeded.",
                    b.time_retentions,
                ),
                (
                    "prometheus_tsdb_size_retentions",
                    "The number of times that blocks were deleted because the maximum number of bytes was exceeded.",
                    b.size_retentions,
                ),
                (
                    "lookout_tsdb_blocks_ignored",
                    "Block directories ignored or removed at start: unfinished, or unreadable.",
                    b.blocks_ignored,
                ),
                (
                    "lookout_tsdb_block_chunks_dropped",
                    "Damaged block chunks and series left out of query results.",
                    b.chunks_dropped,
                ),
            ],
        )
    }
}

fn encode_gauges(
    encoder: &mut DescriptorEncoder,
    gauges: &[(&str, &str, u64)],
) -> Result<(), std::fmt::Error> {
    for &(name, help, value) in gauges {
        let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
        gauge.encode(metric)?;
    }
    Ok(())
}

fn encode_counters(
    encoder: &mut DescriptorEncoder,
    counters: &[(&str, &str, u64)],
) -> Result<(), std::fmt::Error> {
    for &(name, help, value) in counters {
        let c = ConstCounter::new(value);
        let metric = encoder.encode_descriptor(name, help, None, c.metric_type())?;
        c.encode(metric)?;
    }
    Ok(())
}

impl std::fmt::Debug for StorageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageCollector")
    }
}

/// Registers the storage's gauges (`prometheus_tsdb_head_series`,
/// `lookout_storage_max_series`) in `registry`.
pub fn register_storage_metrics(storage: &Arc<Storage>, registry: &mut Registry) {
    registry.register_collector(Box::new(StorageCollector(storage.clone())));
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_promql::Labels;
    use lookout_promql::storage::{STALE_NAN, StorageOptions, is_stale};
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn metrics_text(storage: &Arc<Storage>) -> String {
        let mut registry = Registry::default();
        register_storage_metrics(storage, &mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn wal_figures_are_exposed_only_for_a_durable_storage() {
        let memory = Arc::new(Storage::new(StorageOptions::default()));
        assert!(!metrics_text(&memory).contains("wal"));
        assert!(!metrics_text(&memory).contains("blocks"));
        let dir = tempfile::tempdir().unwrap();
        let durable = Arc::new(
            Storage::open(
                StorageOptions::default(),
                dir.path(),
                lookout_promql::storage::wal::WalOptions::default(),
            )
            .unwrap(),
        );
        let text = metrics_text(&durable);
        for name in [
            "prometheus_tsdb_wal_corruptions_total 0",
            "prometheus_tsdb_wal_segment_current 0",
            "lookout_tsdb_wal_replay_duration_seconds ",
            "prometheus_tsdb_data_replay_duration_seconds ",
            "lookout_tsdb_wal_corrupt_bytes_dropped_total 0",
            "prometheus_tsdb_wal_truncations_total 0",
            "prometheus_tsdb_blocks_loaded 0",
            "prometheus_tsdb_storage_blocks_bytes 0",
            "prometheus_tsdb_compactions_total 0",
            "prometheus_tsdb_compaction_duration_seconds 0",
            "prometheus_tsdb_time_retentions_total 0",
            "prometheus_tsdb_size_retentions_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    /// The allocator's figures, where it is glibc's: held at least the free part.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn allocator_figures_are_exposed() {
        let text = metrics_text(&Arc::new(Storage::new(StorageOptions::default())));
        let value = |name: &str| -> u64 {
            let line = text.lines().find(|l| l.starts_with(name));
            let line = line.unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
            line[name.len()..].trim().parse().unwrap()
        };
        let (held, free) = (
            value("lookout_allocator_held_bytes "),
            value("lookout_allocator_free_bytes "),
        );
        assert!(held > 0 && free <= held, "held {held}, free {free}");
    }

    #[tokio::test]
    async fn query_append_and_last_samples() {
        let storage = Arc::new(Storage::new(StorageOptions::default()));
        let ds = EmbeddedDatasource::new(storage.clone(), Engine::default());
        let up = Labels::new([("__name__", "up"), ("job", "a")]);
        ds.append(
            &[QuerySample {
                labels: up.clone(),
                value: 0.0,
                histogram: None,
            }],
            at(1000),
        )
        .unwrap();
        let r = ds.query("up == 0", at(1010)).await.unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].labels, up);
        let r = ds.query("scalar(up) + 2", at(1010)).await.unwrap();
        assert_eq!(r[0].value, 2.0);
        assert!(r[0].labels.is_empty());
        assert!(matches!(
            ds.query("up[1m]", at(1010)).await,
            Err(DatasourceError::UnexpectedResult { .. })
        ));
        assert!(matches!(
            ds.query("sum(", at(1010)).await,
            Err(DatasourceError::Query { .. })
        ));
        // An older sample is rejected and reported.
        assert!(
            ds.append(
                &[QuerySample {
                    labels: up.clone(),
                    value: 1.0,
                    histogram: None,
                }],
                at(900)
            )
            .is_err()
        );
        ds.append(
            &[QuerySample {
                labels: up.clone(),
                value: STALE_NAN,
                histogram: None,
            }],
            at(1020),
        )
        .unwrap();
        let last = ds
            .last_samples("up{job=\"a\"}", Duration::from_secs(60), at(1030))
            .await
            .unwrap();
        assert_eq!(last.len(), 1);
        assert!(is_stale(last[0].value));
        assert_eq!(last[0].timestamp, at(1020));
        assert!(
            ds.last_samples("sum(up)", Duration::from_secs(60), at(1030))
                .await
                .is_err()
        );
    }

    /// What a recording rule over native histograms records (`sum(h)`, a histogram)
    /// goes to the data directory and comes back after a restart.
    #[tokio::test]
    async fn histogram_rule_results_survive_a_restart() {
        use lookout_promql::histogram::{Bucket, FloatHistogram};
        use lookout_promql::storage::wal::WalOptions;
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            Arc::new(
                Storage::open(StorageOptions::default(), dir.path(), WalOptions::default())
                    .unwrap(),
            )
        };
        let storage = open();
        for (i, path) in ["a", "b"].into_iter().enumerate() {
            let h = FloatHistogram {
                schema: 1,
                count: 3.0 + i as f64,
                sum: 2.5,
                zero_count: 1.0,
                zero_threshold: 0.001,
                positive: vec![Bucket {
                    index: i as i32,
                    count: 2.0 + i as f64,
                }],
                ..Default::default()
            };
            let l = Labels::new([("__name__", "h"), ("path", path)]);
            storage
                .append_histogram(&l, 1_000_000, Arc::new(h))
                .unwrap();
        }
        let ds = EmbeddedDatasource::new(storage.clone(), Engine::default());
        let mut recorded = ds.query("sum(h)", at(1010)).await.unwrap();
        assert_eq!(recorded.len(), 1);
        let want = recorded[0].histogram.clone().expect("a histogram result");
        recorded[0].labels = Labels::new([("__name__", "h:sum")]);
        ds.append(&recorded, at(1010)).unwrap();
        storage.close_wal();
        drop(ds);
        drop(storage);
        let storage = open();
        let ds = EmbeddedDatasource::new(storage, Engine::default());
        let got = ds.query("h:sum", at(1020)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].histogram.as_deref(), Some(&*want));
    }
}
