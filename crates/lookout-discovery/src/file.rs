//! `file_sd_configs`: target groups in JSON or YAML files, as Prometheus's `discovery/file`.
//!
//! The `files` patterns are globbed (a `*` in the last path element only, the file name ending
//! in `.json`, `.yml` or `.yaml`). Every file is re-read each `refresh_interval` (default 5m);
//! besides, the matched files are checked every few seconds
//! ([`DiscoveryOptions::file_poll_interval`], 5 s, or the refresh interval when smaller) and
//! a file whose modification time, size or inode changed, or that appeared, is read at once;
//! one that no longer matches drops its targets. There is no inotify. A file that cannot be
//! read, is larger than [`DiscoveryOptions::max_file_bytes`], lists more than
//! [`DiscoveryOptions::max_targets_per_source`] targets or does not parse keeps its last good
//! groups and counts in `prometheus_sd_file_read_errors_total`. Each group gets
//! `__meta_filepath` (the file's path as matched) and the source `path:index`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::{
    DiscoveryMetrics, DiscoveryOptions, RawGroup, SdDuration, Sink, TargetGroup, into_groups,
};

/// Prometheus's default `refresh_interval` for file SD.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// One `file_sd_configs` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// File paths or patterns (`dir/*.json`).
    pub files: Vec<String>,
    /// Full re-read interval (default 5m).
    #[serde(default)]
    pub refresh_interval: Option<SdDuration>,
}

impl FileSdConfig {
    /// The effective refresh interval.
    pub fn refresh(&self) -> Duration {
        self.refresh_interval
            .map_or(DEFAULT_REFRESH_INTERVAL, |d| d.0)
    }

    /// Checks the patterns as Prometheus does.
    pub fn validate(&self) -> Result<(), String> {
        if self.files.is_empty() {
            return Err("file service discovery config must contain at least one path name".into());
        }
        for f in &self.files {
            if !valid_pattern(f) {
                return Err(format!("path name {f:?} is not valid for file discovery"));
            }
        }
        Ok(())
    }

    /// Resolves relative patterns against `dir` (the configuration file's directory), as
    /// Prometheus does.
    pub fn set_directory(&mut self, dir: &Path) {
        for f in &mut self.files {
            if !Path::new(f.as_str()).is_absolute() && !dir.as_os_str().is_empty() {
                *f = dir.join(&*f).to_string_lossy().into_owned();
            }
        }
    }
}

/// `^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$`.
fn valid_pattern(p: &str) -> bool {
    let Some((stem, ext)) = p.rsplit_once('.') else {
        return false;
    };
    if !["json", "yml", "yaml", "JSON", "YML", "YAML"].contains(&ext) {
        return false;
    }
    match stem.split_once('*') {
        None => true,
        Some((_, after)) => !after.contains('*') && !after.contains('/'),
    }
}

/// What identifies a version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    size: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: m.modified().ok(),
        size: m.len(),
        inode,
    })
}

/// Reads and parses one target file under the options' bounds.
pub fn read_file(path: &Path, options: &DiscoveryOptions) -> Result<Vec<TargetGroup>, String> {
    let bytes = crate::read_capped(path, options.max_file_bytes)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "the file is larger than the {}-byte target file limit",
                options.max_file_bytes
            )
        })?;
    let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let raw: Vec<RawGroup> = match ext.as_str() {
        "json" => serde_json::from_str(&text).map_err(|e| e.to_string())?,
        "yml" | "yaml" => {
            if text.trim().is_empty() {
                Vec::new()
            } else {
                lookout_web::yaml_depth::check(&text).map_err(|e| e.to_string())?;
                serde_yaml_ng::from_str::<Option<Vec<RawGroup>>>(&text)
                    .map_err(|e| e.to_string())?
                    .unwrap_or_default()
            }
        }
        _ => return Err(format!("unhandled file extension {ext:?}")),
    };
    let name = path.to_string_lossy();
    into_groups(
        raw,
        ("__meta_filepath", &name),
        |i| format!("{name}:{i}"),
        options.max_targets_per_source,
    )
}

/// The files the patterns match now, sorted.
fn list_files(patterns: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in patterns {
        match glob::glob(p) {
            Ok(paths) => out.extend(paths.filter_map(Result::ok)),
            Err(e) => tracing::error!(pattern = %p, error = %e, "bad file_sd pattern"),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Per file: its stamp when last read, and its last good groups.
type Files = BTreeMap<PathBuf, (Option<Stamp>, Vec<TargetGroup>)>;

/// Reads the files of `cfg` that are new or changed since `known` (every file when `full`);
/// returns each file's stamp and last good groups, and whether the targets changed.
fn scan(
    cfg: &FileSdConfig,
    opts: &DiscoveryOptions,
    mut known: Files,
    full: bool,
    metrics: &DiscoveryMetrics,
) -> (Files, bool) {
    let mut next = BTreeMap::new();
    let mut changed = false;
    for path in list_files(&cfg.files) {
        let now = stamp(&path);
        let previous = known.remove(&path);
        match previous {
            Some((s, groups)) if !full && s == now => {
                next.insert(path, (now, groups));
                continue;
            }
            _ => {}
        }
        let groups = match read_file(&path, opts) {
            Ok(groups) => {
                changed |= previous
                    .as_ref()
                    .map_or(!groups.is_empty(), |(_, g)| *g != groups);
                groups
            }
            Err(e) => {
                metrics.file_read_errors.inc();
                tracing::error!(path = %path.display(), error = %e, "Error reading file; keeping its last good targets");
                // The stamp is remembered so that the broken version is not re-read every
                // poll; the targets are the last good ones.
                previous.map(|(_, g)| g).unwrap_or_default()
            }
        };
        next.insert(path, (now, groups));
    }
    // A file gone takes its targets with it.
    changed |= known.values().any(|(_, g)| !g.is_empty());
    (next, changed)
}

pub(crate) async fn run(cfg: FileSdConfig, options: DiscoveryOptions, sink: Sink) {
    let refresh = cfg.refresh();
    let poll = options
        .file_poll_interval
        .min(refresh)
        .max(Duration::from_millis(10));
    let mut files = Files::new();
    let mut last_full = None::<Instant>;
    let mut published = false;
    loop {
        let full = last_full.is_none_or(|t| t.elapsed() >= refresh);
        if full {
            last_full = Some(Instant::now());
        }
        let (cfg2, opts2, known) = (cfg.clone(), options.clone(), std::mem::take(&mut files));
        let metrics = sink.metrics.clone();
        let scanned =
            tokio::task::spawn_blocking(move || scan(&cfg2, &opts2, known, full, &metrics)).await;
        match scanned {
            Ok((next, changed)) => {
                files = next;
                // The targets of every file are copied for the subscribers only when one
                // changed: with 10,000 targets a copy every poll is tens of megabytes of
                // short-lived allocations.
                if changed || !published {
                    sink.publish(
                        files
                            .values()
                            .flat_map(|(_, g)| g.iter().cloned())
                            .collect(),
                    );
                    published = true;
                }
            }
            // The scan panicked: its files are read again at the next poll, as new ones.
            Err(e) => tracing::error!(error = %e, "file_sd scan failed"),
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_as_prometheus() {
        assert!(valid_pattern("a/b/*.json"));
        assert!(valid_pattern("a/b/x*.yml"));
        assert!(valid_pattern("t.YAML"));
        assert!(!valid_pattern("a/*/b.json"));
        assert!(!valid_pattern("a/b/*.txt"));
        assert!(!valid_pattern("a/**.json"));
    }

    #[test]
    fn json_yaml_limits() {
        let dir = tempfile::tempdir().unwrap();
        let o = DiscoveryOptions::default();
        let j = dir.path().join("a.json");
        std::fs::write(&j, r#"[{"targets":["h:1"],"labels":{"x":"y"}}]"#).unwrap();
        let g = read_file(&j, &o).unwrap();
        assert_eq!(g[0].labels["__meta_filepath"], j.to_string_lossy());
        assert_eq!(g[0].source, format!("{}:0", j.display()));
        let y = dir.path().join("b.yml");
        std::fs::write(&y, "- targets: [h:2]\n  labels: {x: z}\n").unwrap();
        assert_eq!(
            read_file(&y, &o).unwrap()[0].targets[0]["__address__"],
            "h:2"
        );
        std::fs::write(&y, "- targets: [h:2]\n  lables: {x: z}\n").unwrap();
        assert!(read_file(&y, &o).is_err());
        std::fs::write(&y, "").unwrap();
        assert!(read_file(&y, &o).unwrap().is_empty());
        let small = DiscoveryOptions {
            max_file_bytes: 10,
            ..o
        };
        let e = read_file(&j, &small).unwrap_err();
        assert!(e.contains("10-byte"), "{e}");
    }

    /// A scan reports a change only when the targets changed, so that an unchanged poll
    /// copies nothing for the subscribers.
    #[test]
    fn scan_reports_only_changed_targets() {
        let dir = tempfile::tempdir().unwrap();
        let (o, m) = (DiscoveryOptions::default(), DiscoveryMetrics::default());
        let cfg = FileSdConfig {
            files: vec![format!("{}/*.json", dir.path().display())],
            refresh_interval: None,
        };
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        std::fs::write(&a, r#"[{"targets":["h:1"]}]"#).unwrap();
        let (files, changed) = scan(&cfg, &o, BTreeMap::new(), false, &m);
        assert!(changed, "a new file");
        let (files, changed) = scan(&cfg, &o, files, false, &m);
        assert!(!changed, "nothing touched");
        let (files, changed) = scan(&cfg, &o, files, true, &m);
        assert!(!changed, "re-read, same targets");
        // Rewritten with the same targets (new inode), then with other ones.
        std::fs::write(&b, r#"[{"targets":["h:1"]}]"#).unwrap();
        std::fs::rename(&b, &a).unwrap();
        let (files, changed) = scan(&cfg, &o, files, false, &m);
        assert!(!changed, "rewritten with the same targets");
        std::fs::write(&b, r#"[{"targets":["h:2"]}]"#).unwrap();
        std::fs::rename(&b, &a).unwrap();
        let (files, changed) = scan(&cfg, &o, files, false, &m);
        assert!(changed, "other targets");
        // A broken rewrite keeps the last good targets: no change.
        std::fs::write(&a, "[{").unwrap();
        let (files, changed) = scan(&cfg, &o, files, false, &m);
        assert!(!changed, "broken file");
        assert_eq!(files[&a].1[0].targets[0]["__address__"], "h:2");
        // An empty file added changes nothing; a file removed with targets does.
        std::fs::write(&b, "[]").unwrap();
        let (files, changed) = scan(&cfg, &o, files, false, &m);
        assert!(!changed, "an empty file");
        std::fs::remove_file(&a).unwrap();
        let (files, changed) = scan(&cfg, &o, files, false, &m);
        assert!(changed, "a file removed");
        assert_eq!(files.len(), 1);
    }
}
