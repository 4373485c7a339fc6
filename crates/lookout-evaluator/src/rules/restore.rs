//! The `for` state an alert gets back after a restart: Prometheus's `RestoreForState`
//! computation from the last `ALERTS_FOR_STATE` sample of each alert, and the samples not
//! yet applied. Below both the alerting rule (which applies them when an alert appears) and
//! [`crate::state`] (which reads them from the datasource or the state file).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lookout_promql::Labels;
use lookout_promql::storage::is_stale;

/// Signed `a - b` in nanoseconds (Go's `Time.Sub`).
pub(crate) fn sub(a: SystemTime, b: SystemTime) -> i128 {
    match a.duration_since(b) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Unix seconds, truncated like Go's `Time.Unix()`.
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => {
            let d = e.duration();
            -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// A time from Unix seconds (the fraction dropped, as Prometheus's restore does).
fn from_secs_f64(v: f64) -> SystemTime {
    let secs = v.trunc() as i64;
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Prometheus's default `--rules.alert.for-outage-tolerance`.
pub const DEFAULT_OUTAGE_TOLERANCE: Duration = Duration::from_secs(3600);
/// Prometheus's default `--rules.alert.for-grace-period`.
pub const DEFAULT_FOR_GRACE_PERIOD: Duration = Duration::from_secs(600);

/// The last `ALERTS_FOR_STATE` sample of one alert.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForState {
    /// When the sample was written (the last evaluation that saw the alert active).
    pub timestamp: SystemTime,
    /// Its value: the alert's `active_at` in Unix seconds (or a staleness marker).
    pub value: f64,
}

/// Saved `for` state not yet applied: the state-file entries that matched no alert when the
/// rule was restored, applied when each alert first appears (see the module doc).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PendingRestore {
    /// Alert labels → last saved sample.
    pub entries: HashMap<Labels, ForState>,
    /// Saved samples older than this before the evaluation are not applied.
    pub outage_tolerance: Duration,
    /// The grace period of [`restored_active_at`].
    pub grace_period: Duration,
}

impl PendingRestore {
    /// Drops the entries older than the outage tolerance at `now`.
    pub fn expire(&mut self, now: SystemTime) {
        let min = now.checked_sub(self.outage_tolerance);
        self.entries
            .retain(|_, s| min.is_none_or(|min| s.timestamp >= min));
    }

    /// Takes the entry of an alert that appears at `now` and returns its restored
    /// `active_at`, if the entry is within the outage tolerance and not in the future.
    pub fn take(&mut self, labels: &Labels, hold: Duration, now: SystemTime) -> Option<SystemTime> {
        let s = self.entries.remove(labels)?;
        let min = now.checked_sub(self.outage_tolerance);
        if s.timestamp > now || min.is_some_and(|min| s.timestamp < min) {
            return None;
        }
        restored_active_at(&s, hold, now, self.grace_period)
    }
}

/// Prometheus's `RestoreForState` computation for one alert of a rule with `for` = `hold`,
/// restored at `now` from its last saved sample `saved`: `None` for a staleness marker (or
/// any non-finite value); otherwise the saved `active_at` when the alert had already fired,
/// `now + grace_period - hold` when less than the grace period of `for` remained, else the
/// saved `active_at` moved forward by the downtime (`now` minus the sample's time).
pub fn restored_active_at(
    saved: &ForState,
    hold: Duration,
    now: SystemTime,
    grace_period: Duration,
) -> Option<SystemTime> {
    // Any NaN, not only Prometheus's staleness bit pattern: VictoriaMetrics returns stored
    // staleness markers as a plain "NaN", and a non-finite value holds no `active_at`.
    if is_stale(saved.value) || !saved.value.is_finite() {
        return None;
    }
    let down_at = UNIX_EPOCH + Duration::from_secs(unix_secs(saved.timestamp).max(0) as u64);
    let mut restored_active_at = from_secs_f64(saved.value);
    let time_spent_pending = sub(down_at, restored_active_at);
    let remaining = hold.as_nanos() as i128 - time_spent_pending;
    if remaining <= 0 {
        // It was firing: it fires again at the next evaluation if still active.
    } else if remaining < grace_period.as_nanos() as i128 {
        restored_active_at = now + grace_period - hold;
    } else {
        let down = sub(now, down_at).max(0) as u64;
        restored_active_at += Duration::from_nanos(down);
    }
    Some(restored_active_at)
}
