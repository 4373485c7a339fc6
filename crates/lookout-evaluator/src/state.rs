//! `for` state across restarts (Prometheus's `RestoreForState`).
//!
//! After a restart the `for` timers of alerts that were pending or firing are restored from
//! the last `ALERTS_FOR_STATE` sample of each alert (its value is the alert's `active_at`):
//!
//! * only samples from the last `outage_tolerance` (1h) count;
//! * rules whose `for` is shorter than `for_grace_period` (10m) are not restored;
//! * an alert that had already fired fires again at the next evaluation;
//! * an alert whose remaining pending time is shorter than the grace period gets the grace
//!   period; otherwise its `active_at` moves forward by the downtime.
//!
//! In remote mode the samples come from the datasource (a Prometheus that stores the
//! evaluator's `ALERTS_FOR_STATE`, e.g. through remote write). The embedded storage lives in
//! memory, so in embedded mode the same information is kept in a small JSON state file
//! written atomically (temporary file, fsync, rename, fsync of the directory).
//!
//! # Deliberate difference from Prometheus: late alerts in embedded mode
//!
//! Prometheus restores once, after the group's second evaluation, and only the alerts
//! active at that moment: its on-disk TSDB still holds the pre-restart samples, so the
//! alerts are there. The embedded storage starts empty after a restart; when no scrape has
//! landed by the second evaluation (a scrape interval longer than the evaluation interval,
//! a slow target, an expression such as `rate()` that needs two samples) the alerts are
//! not active yet and Prometheus's restore would find nothing, starting their `for` timers
//! from zero later. So with the state file as source ([`RestoreSource::Saved`]) the saved
//! entries that match no alert at restore time stay *pending* on their rule
//! ([`PendingRestore`]) and are applied when the alert first appears, with the same
//! computation ([`restored_active_at`]) evaluated at that evaluation's timestamp: the
//! saved sample must be within the outage tolerance of it, an alert that had fired keeps
//! its `active_at`, the time between the last save and the alert's appearance counts as
//! downtime, and the grace period applies. Entries older than the outage tolerance are
//! dropped; pending entries are written back to the state file, so a second restart before
//! the alert appears keeps them. Consequence: an alert that cleared while the evaluator was
//! down and comes back within the outage tolerance of its last save resumes its saved
//! timer, where Prometheus (which would have seen it absent at restore time) starts it
//! afresh.
//!
//! Waiting for every scrape target's first scrape before restoring was not chosen: it does
//! not cover expressions that need more than one sample or targets whose data arrives
//! later, and in remote mode the server already holds the data. Remote mode
//! ([`RestoreSource::Datasource`]) keeps Prometheus's behaviour exactly: nothing is left
//! pending.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lookout_promql::Labels;
use lookout_promql::labels::METRIC_NAME;
use serde::{Deserialize, Serialize};

use crate::alert::AlertState;
use crate::datasource::Datasource;
use crate::rules::Rule;
use crate::rules::group::Group;
pub use crate::rules::restore::{
    DEFAULT_FOR_GRACE_PERIOD, DEFAULT_OUTAGE_TOLERANCE, ForState, PendingRestore,
    restored_active_at,
};
use crate::rules::restore::{sub, unix_secs};
use lookout_promql::storage::is_stale;

/// Where restored `for` state comes from.
#[derive(Clone)]
pub enum RestoreSource {
    /// `ALERTS_FOR_STATE` queried from the datasource.
    Datasource(Arc<dyn Datasource>),
    /// The state file read at start-up (alert labels → last sample).
    Saved(Arc<HashMap<Labels, ForState>>),
}

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// I/O on the state file, or a file refused by the size limit.
    #[error("state file {path} (--rules.state-file): {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a state file.
    #[error("state file {path} (--rules.state-file): {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
struct StateFileJson {
    version: u32,
    alerts: Vec<SavedAlert>,
}

#[derive(Serialize, Deserialize)]
struct SavedAlert {
    labels: BTreeMap<String, String>,
    /// Time of the last `ALERTS_FOR_STATE` sample, Unix milliseconds.
    timestamp_ms: i64,
    /// `active_at`, Unix seconds (the sample value).
    active_at: i64,
}

fn to_ms(t: SystemTime) -> i64 {
    (sub(t, UNIX_EPOCH) / 1_000_000) as i64
}

fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Reads a state file; a missing file is an empty state. A file larger than
/// [`MAX_STATE_FILE_BYTES`](crate::limits::MAX_STATE_FILE_BYTES) or not a regular file is
/// an [`StateError::Io`] naming the limit, which the rule manager treats as it treats a
/// corrupt file: logged, ignored, and replaced at the next save.
pub fn read_state_file(path: &Path) -> Result<HashMap<Labels, ForState>, StateError> {
    let text = match crate::limits::read_capped_bytes(path, crate::limits::FileLimit::state_file())
    {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => {
            return Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let json: StateFileJson = serde_json::from_slice(&text).map_err(|e| StateError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if json.version != 1 {
        return Err(StateError::Format {
            path: path.to_path_buf(),
            message: format!("unsupported version {}", json.version),
        });
    }
    Ok(json
        .alerts
        .into_iter()
        .map(|a| {
            (
                Labels::new(a.labels),
                ForState {
                    timestamp: from_ms(a.timestamp_ms),
                    value: a.active_at as f64,
                },
            )
        })
        .collect())
}

/// Writes a state file atomically: a temporary file in the same directory, fsync, rename
/// over the old one, fsync of the directory.
pub fn write_state_file(path: &Path, state: &HashMap<Labels, ForState>) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut alerts: Vec<SavedAlert> = state
        .iter()
        .filter(|(_, s)| !is_stale(s.value))
        .map(|(l, s)| SavedAlert {
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            timestamp_ms: to_ms(s.timestamp),
            active_at: s.value as i64,
        })
        .collect();
    alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
    let json = serde_json::to_vec_pretty(&StateFileJson { version: 1, alerts }).map_err(|e| {
        StateError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".to_string());
    let tmp = dir.join(format!(".{file_name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Directory fsync makes the rename durable; not all platforms allow it.
        let _ = d.sync_all();
    }
    Ok(())
}

/// The `ALERTS_FOR_STATE` state of every restored alerting rule of `groups`, as of each
/// group's last evaluation, plus the saved entries still pending: what the state file holds.
pub fn collect_for_state(groups: &[Arc<Group>]) -> HashMap<Labels, ForState> {
    let mut out = HashMap::new();
    for g in groups {
        let Some(ts) = g.last_eval_timestamp() else {
            continue;
        };
        let at = ts - g.query_offset();
        for rule in g.rules() {
            let Rule::Alerting(r) = rule else { continue };
            if !r.restored() {
                continue;
            }
            for a in r.current_alerts() {
                if a.state == AlertState::Inactive {
                    continue;
                }
                out.insert(
                    a.labels.clone(),
                    ForState {
                        timestamp: at,
                        value: unix_secs(a.active_at) as f64,
                    },
                );
            }
            // Saved state still waiting for its alert to appear is kept as it was.
            if let Some(p) = r.pending_restore() {
                for (l, s) in p.entries {
                    out.entry(l).or_insert(s);
                }
            }
        }
    }
    out
}

/// Restores the `for` state of `group`'s alerting rules at `now` (after its second
/// evaluation), then marks every rule restored. With [`RestoreSource::Saved`], saved entries
/// that match no alert yet are left pending on the rule (see the module doc).
pub async fn restore_for_state(
    group: &Group,
    source: &RestoreSource,
    now: SystemTime,
    outage_tolerance: Duration,
    grace_period: Duration,
) {
    for rule in group.rules() {
        let Rule::Alerting(r) = rule else { continue };
        let hold = r.hold_duration();
        if hold < grace_period {
            // Restoring would only make it wait longer than `for`.
            r.set_restored(true);
            continue;
        }
        let series: HashMap<Labels, ForState> = match source {
            RestoreSource::Datasource(ds) => {
                match ds
                    .last_samples(&r.for_state_selector(), outage_tolerance, now)
                    .await
                {
                    Ok(samples) => samples
                        .into_iter()
                        .map(|s| {
                            let mut l = s.labels;
                            l.remove(METRIC_NAME);
                            (
                                l,
                                ForState {
                                    timestamp: s.timestamp,
                                    value: s.value,
                                },
                            )
                        })
                        .collect(),
                    Err(e) => {
                        tracing::error!(group = group.name(), alert = r.name(), err = %e, "Failed to restore 'for' state");
                        continue;
                    }
                }
            }
            RestoreSource::Saved(saved) => {
                let min = now - outage_tolerance;
                saved
                    .iter()
                    .filter(|(l, s)| {
                        l.get("alertname") == Some(r.name())
                            && s.timestamp >= min
                            && s.timestamp <= now
                    })
                    .map(|(l, s)| (l.clone(), *s))
                    .collect()
            }
        };
        let mut series = series;
        r.for_each_alert_mut(|a| {
            let Some(s) = series.remove(&a.labels) else {
                return;
            };
            if let Some(at) = restored_active_at(&s, hold, now, grace_period) {
                a.active_at = at;
            }
        });
        if matches!(source, RestoreSource::Saved(_)) {
            // Alerts that have not appeared yet (no data since the restart): keep their
            // saved state until they do.
            series.retain(|_, s| !is_stale(s.value));
            if !series.is_empty() {
                r.set_pending_restore(Some(PendingRestore {
                    entries: series,
                    outage_tolerance,
                    grace_period,
                }));
            }
        }
        r.set_restored(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trip_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let mut m = HashMap::new();
        m.insert(
            Labels::new([("alertname", "A"), ("instance", "x")]),
            ForState {
                timestamp: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
                value: 1_699_999_000.0,
            },
        );
        write_state_file(&path, &m).unwrap();
        assert_eq!(read_state_file(&path).unwrap(), m);
        assert!(!dir.path().join("sub/.state.json.tmp").exists());
        assert!(
            read_state_file(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
        std::fs::write(&path, "{").unwrap();
        assert!(read_state_file(&path).is_err());
    }

    #[test]
    fn a_state_file_over_the_limit_is_refused_like_a_corrupt_one_and_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // Sparse: 64 MiB and one byte that take no disk space and are never read.
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(crate::limits::MAX_STATE_FILE_BYTES + 1))
            .unwrap();
        let err = read_state_file(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "state file {} (--rules.state-file): the file is larger than the 67108864-byte \
                 alert state file size limit; check that it is the right file",
                path.display()
            )
        );
        // The next save replaces it with a valid file.
        let m = HashMap::from([(
            Labels::new([("alertname", "A")]),
            ForState {
                timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                value: 1_699_999_000.0,
            },
        )]);
        write_state_file(&path, &m).unwrap();
        assert_eq!(read_state_file(&path).unwrap(), m);
    }

    #[test]
    fn a_plain_nan_restores_nothing_as_a_staleness_marker_does() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let saved = |value| ForState {
            timestamp: now - Duration::from_secs(10),
            value,
        };
        let hold = Duration::from_secs(60);
        let grace = Duration::from_secs(1);
        for value in [f64::NAN, f64::INFINITY, lookout_promql::storage::STALE_NAN] {
            assert_eq!(restored_active_at(&saved(value), hold, now, grace), None);
        }
        // Pending for 20 s before going down 10 s ago: 40 s of `for` are left after now.
        assert_eq!(
            restored_active_at(&saved(1_700_000_070.0), hold, now, grace),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_080))
        );
    }

    #[test]
    fn a_state_path_that_is_not_a_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_state_file(dir.path()).unwrap_err().to_string();
        assert!(err.ends_with("is not a regular file"), "{err}");
    }
}
