//! Push monitors: a job POSTs `/heartbeat/{name}` when it ran; a heartbeat silent for longer
//! than its `max_silence` is down.
//!
//! A heartbeat that has never been pushed counts its silence from the moment it was
//! configured (exporter start or the reload that added it), so a freshly started exporter does
//! not page for every job that has not run yet.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Heartbeat;

/// What is known about one heartbeat.
#[derive(Debug, Clone)]
struct Entry {
    max_silence: Duration,
    /// When the heartbeat was configured.
    since: Instant,
    /// The last push: monotonic time for the silence, wall time for the metric.
    last_seen: Option<(Instant, f64)>,
}

/// One heartbeat's state at a given moment, for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatStatus {
    /// The heartbeat's name.
    pub name: String,
    /// Unix time of the last push, if any.
    pub last_seen: Option<f64>,
    /// Whether the heartbeat has been silent no longer than its `max_silence`.
    pub up: bool,
    /// Its configured `max_silence`.
    pub max_silence: Duration,
}

/// All configured heartbeats.
#[derive(Debug, Default)]
pub struct Heartbeats {
    entries: RwLock<BTreeMap<String, Entry>>,
}

impl Heartbeats {
    /// Applies a (new) configuration: keeps the pushes of heartbeats that stay, forgets removed
    /// ones, and starts the silence of new ones now.
    pub fn apply(&self, heartbeats: &[Heartbeat]) {
        let now = Instant::now();
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let mut next = BTreeMap::new();
        for heartbeat in heartbeats {
            let entry = match entries.remove(&heartbeat.name) {
                Some(old) => Entry {
                    max_silence: heartbeat.max_silence,
                    ..old
                },
                None => Entry {
                    max_silence: heartbeat.max_silence,
                    since: now,
                    last_seen: None,
                },
            };
            next.insert(heartbeat.name.clone(), entry);
        }
        *entries = next;
    }

    /// Records a push; returns `false` when no heartbeat has that name.
    pub fn push(&self, name: &str) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match entries.get_mut(name) {
            Some(entry) => {
                entry.last_seen = Some((Instant::now(), unix_now()));
                true
            }
            None => false,
        }
    }

    /// The state of every heartbeat, sorted by name.
    pub fn statuses(&self) -> Vec<HeartbeatStatus> {
        let now = Instant::now();
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|(name, entry)| {
                let reference = entry.last_seen.map(|(at, _)| at).unwrap_or(entry.since);
                HeartbeatStatus {
                    name: name.clone(),
                    last_seen: entry.last_seen.map(|(_, wall)| wall),
                    up: now.saturating_duration_since(reference) <= entry.max_silence,
                    max_silence: entry.max_silence,
                }
            })
            .collect()
    }
}

/// Seconds since the Unix epoch, as a float.
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(name: &str, max_silence: Duration) -> Heartbeat {
        Heartbeat {
            name: name.to_string(),
            max_silence,
        }
    }

    #[test]
    fn unknown_names_are_refused() {
        let beats = Heartbeats::default();
        beats.apply(&[heartbeat("backup", Duration::from_secs(60))]);
        assert!(!beats.push("nightly"));
        assert!(beats.push("backup"));
    }

    #[test]
    fn silence_longer_than_max_is_down() {
        let beats = Heartbeats::default();
        beats.apply(&[
            heartbeat("never", Duration::ZERO),
            heartbeat("patient", Duration::from_secs(3600)),
        ]);
        std::thread::sleep(Duration::from_millis(5));
        let statuses = beats.statuses();
        assert_eq!(statuses[0].name, "never");
        assert!(!statuses[0].up);
        assert_eq!(statuses[0].last_seen, None);
        assert!(statuses[1].up);
    }

    #[test]
    fn reload_keeps_pushes_of_remaining_heartbeats() {
        let beats = Heartbeats::default();
        beats.apply(&[
            heartbeat("a", Duration::from_secs(60)),
            heartbeat("b", Duration::from_secs(60)),
        ]);
        assert!(beats.push("a"));
        beats.apply(&[heartbeat("a", Duration::from_secs(30))]);
        let statuses = beats.statuses();
        assert_eq!(statuses.len(), 1);
        assert!(statuses[0].last_seen.is_some());
        assert!(!beats.push("b"));
    }
}
