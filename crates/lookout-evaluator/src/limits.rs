//! Bounds on what comes from outside the evaluator, and the counter of limits hit.
//!
//! | limit | default | flag |
//! |---|---|---|
//! | configuration file size | [`MAX_CONFIG_FILE_BYTES`] (1 MiB) | `--config.max-file-size` |
//! | rule file size | [`MAX_RULE_FILE_BYTES`] (10 MiB) | `--rules.max-file-size` |
//! | secret file (`password_file`, `credentials_file`, `bearer_token_file`) | [`MAX_SECRET_FILE_BYTES`] (64 KiB) | none |
//! | alert state file read at start | [`MAX_STATE_FILE_BYTES`] (64 MiB) | none |
//! | expanded label/annotation template | [`MAX_TEMPLATE_OUTPUT_BYTES`] (64 KiB) | `--rules.template.max-output-bytes` |
//! | samples one query holds | 50,000,000 | `--query.max-samples` |
//! | one query's run time | 2m | `--query.timeout` |
//! | API queries at once | [`DEFAULT_QUERY_MAX_CONCURRENCY`] (20) | `--query.max-concurrency` |
//! | series in the embedded storage | [`DEFAULT_STORAGE_MAX_SERIES`] (1,000,000) | `--storage.max-series` |
//!
//! Scrape limits (`body_size_limit`, `sample_limit`, `label_limit`, ...) are per job in the
//! scrape configuration and counted by the `prometheus_target_scrapes_*` counters.
//!
//! Files are read only when they are regular files (a FIFO would block, a device could be
//! endless). A refused secret file fails the scrape (or notification, or remote request)
//! with an error naming the setting, the file and the limit; a refused state file is
//! logged and ignored like a corrupt one; neither is counted below.
//!
//! Each other limit hit is counted in `lookout_evaluator_limit_hits_total{limit}` (one of
//! [`LIMIT_NAMES`]) and named, with its flag, in the error it causes.

use std::io::Read as _;
use std::path::Path;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use lookout_promql::engine::QueryError;
use lookout_promql::storage::AppendError;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Default largest configuration file read (1 MiB, `--config.max-file-size`): a longer one
/// is refused, not read into memory.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;
/// Default largest rule file read (10 MiB, `--rules.max-file-size`).
pub const MAX_RULE_FILE_BYTES: u64 = 10 << 20;
/// Default longest expansion of one label or annotation template (64 KiB,
/// `--rules.template.max-output-bytes`); expanding stops there and the text becomes
/// Prometheus's `<error expanding template: ...>` naming this limit.
pub const MAX_TEMPLATE_OUTPUT_BYTES: usize = 64 << 10;
/// Most nested `template` calls in one expansion (Go allows 100,000, far more than a
/// thread's stack holds here: about 10 KB a level in a debug build); fixed.
pub const MAX_TEMPLATE_DEPTH: usize = 100;
/// Most nested control structures (`if`, `else if`, `with`, `range`, `block`, `define`) and
/// parenthesized pipelines in one template text: gtmpl's parser recurses on each (Go's
/// stacks grow; a thread's do not), so deeper text is refused before it can overflow the
/// stack at `rules check`, load or reload. 50 keeps a debug build's parser well inside a
/// 2 MiB runtime thread (a parenthesized level costs it about 24 KB); real templates nest a
/// handful of levels. Fixed.
pub const MAX_TEMPLATE_NESTING: usize = 50;
/// Most stack one template expansion may use (1 MiB, half of a runtime thread's 2 MiB):
/// nested `if`, `with` and `range` cost stack too, so the call count alone is not enough.
pub const TEMPLATE_STACK_BUDGET: usize = 1 << 20;
/// Default time the label and annotation templates of one rule evaluation may take
/// together (`--rules.template.timeout`).
pub const DEFAULT_TEMPLATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Default number of API queries evaluated at once (`--query.max-concurrency`, as
/// Prometheus); more wait for a slot within their timeout.
pub const DEFAULT_QUERY_MAX_CONCURRENCY: usize = 20;
/// Default number of series the embedded storage holds (`--storage.max-series`; 0 is
/// unlimited).
pub const DEFAULT_STORAGE_MAX_SERIES: usize = 1_000_000;

/// The `limit` label values of `lookout_evaluator_limit_hits_total`.
pub const LIMIT_NAMES: [&str; 10] = [
    "config_file_size",
    "rule_file_size",
    "template_output_size",
    "template_depth",
    "template_timeout",
    "query_max_samples",
    "query_timeout",
    "query_max_depth",
    "query_max_concurrency",
    "storage_max_series",
];

type LimitLabels = [(&'static str, &'static str); 1];

static HITS: LazyLock<Family<LimitLabels, Counter>> = LazyLock::new(|| {
    let family = Family::<LimitLabels, Counter>::default();
    // Present from the start so a rate() over them is defined.
    for name in LIMIT_NAMES {
        let _ = family.get_or_create(&[("limit", name)]).get();
    }
    family
});

/// Counts one hit of the limit `name` (one of [`LIMIT_NAMES`]).
pub fn hit(name: &'static str) {
    HITS.get_or_create(&[("limit", name)]).inc();
}

/// How many times the limit `name` was hit in this process.
pub fn hits(name: &'static str) -> u64 {
    HITS.get_or_create(&[("limit", name)]).get()
}

/// Registers `lookout_evaluator_limit_hits_total{limit}` in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "lookout_evaluator_limit_hits",
        "Inputs refused or cut because they exceeded a limit, by limit",
        HITS.clone(),
    );
}

/// Counts a query error that is a limit being hit (`--query.max-samples`,
/// `--query.timeout`); other errors are not counted here.
pub fn count_query_error(e: &QueryError) {
    match e {
        QueryError::TooManySamples(_) => hit("query_max_samples"),
        QueryError::Eval { message, .. } if message.contains("query timed out") => {
            hit("query_timeout")
        }
        QueryError::Parse { message, .. } if message.contains("(--query.max-depth)") => {
            hit("query_max_depth")
        }
        _ => {}
    }
}

/// Largest secret file read (`password_file`, `credentials_file`, `bearer_token_file` of a
/// scrape job): 64 KiB.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;
/// Largest alert state file read at start (`--rules.state-file`): 64 MiB, room for about
/// 200,000 saved alerts with a dozen labels each.
pub const MAX_STATE_FILE_BYTES: u64 = 64 << 20;

/// A bound on the size of a file read whole (rule files, the configuration file, secret
/// files, the alert state file).
#[derive(Clone, Copy, Debug)]
pub struct FileLimit {
    /// Most bytes read.
    pub bytes: u64,
    /// What the file is, for the message: "rule file", "configuration file".
    pub what: &'static str,
    /// The flag that sets the limit, for the message; `None` for a fixed limit.
    pub flag: Option<&'static str>,
    /// The `limit` label counted when the file is refused; `None` when it is not counted
    /// here (the caller reports it another way).
    pub counter: Option<&'static str>,
}

impl FileLimit {
    /// The rule file limit of `bytes` (`--rules.max-file-size`).
    pub fn rule_file(bytes: u64) -> FileLimit {
        FileLimit {
            bytes,
            what: "rule file",
            flag: Some("--rules.max-file-size"),
            counter: Some("rule_file_size"),
        }
    }

    /// The limit of `bytes` on a `promtool test rules` unit-test file, which
    /// `--rules.max-file-size` bounds along with the rule files it names.
    pub fn rule_test_file(bytes: u64) -> FileLimit {
        FileLimit {
            bytes,
            what: "rule test file",
            flag: Some("--rules.max-file-size"),
            counter: Some("rule_file_size"),
        }
    }

    /// The configuration file limit of `bytes` (`--config.max-file-size`).
    pub fn config_file(bytes: u64) -> FileLimit {
        FileLimit {
            bytes,
            what: "configuration file",
            flag: Some("--config.max-file-size"),
            counter: Some("config_file_size"),
        }
    }

    /// The [`MAX_SECRET_FILE_BYTES`] limit on the secret file that the setting `setting`
    /// (`password_file`, ...) names; a refusal is a scrape error, not counted here.
    pub fn secret_file(setting: &'static str) -> FileLimit {
        FileLimit {
            bytes: MAX_SECRET_FILE_BYTES,
            what: setting,
            flag: None,
            counter: None,
        }
    }

    /// The [`MAX_STATE_FILE_BYTES`] limit on the alert state file (`--rules.state-file`),
    /// read once at start; a refused file is ignored like a corrupt one.
    pub fn state_file() -> FileLimit {
        FileLimit {
            bytes: MAX_STATE_FILE_BYTES,
            what: "alert state file",
            flag: None,
            counter: None,
        }
    }

    fn refusal(&self) -> std::io::Error {
        if let Some(counter) = self.counter {
            hit(counter);
        }
        let message = match self.flag {
            Some(flag) => format!(
                "the file is larger than the {}-byte {} size limit ({flag}); split it or raise the limit",
                self.bytes, self.what
            ),
            None => format!(
                "the file is larger than the {}-byte {} size limit; check that it is the right file",
                self.bytes, self.what
            ),
        };
        std::io::Error::new(std::io::ErrorKind::InvalidData, message)
    }
}

/// Reads a file of at most `limit.bytes` bytes. A larger file is not read past the limit
/// and gives an `InvalidData` error naming the limit (and its flag), and the hit is
/// counted. Only regular files are read: anything else (a FIFO, which would block, a
/// device, a directory) gives an `InvalidInput` error "is not a regular file".
pub fn read_capped_bytes(path: &Path, limit: FileLimit) -> std::io::Result<Vec<u8>> {
    // Never blocks: a FIFO or a device is refused before and after opening.
    let (file, len) = lookout_web::files::open_regular(path)?;
    if len > limit.bytes {
        return Err(limit.refusal());
    }
    // The file may have grown since, or report no length (/proc): the read itself stops
    // one byte past the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(limit.bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit.bytes {
        return Err(limit.refusal());
    }
    Ok(bytes)
}

/// [`read_capped_bytes`] for a UTF-8 file; other bytes give an `InvalidData` error.
pub fn read_capped(path: &Path, limit: FileLimit) -> std::io::Result<String> {
    let bytes = read_capped_bytes(path, limit)?;
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is not UTF-8 text: {}", e.utf8_error()),
        )
    })
}

/// The text an expansion stopped at the template output limit fails with.
pub fn template_output_error(limit: usize) -> String {
    format!(
        "template output is larger than the {limit}-byte template output limit (--rules.template.max-output-bytes); expansion stopped"
    )
}

/// The error of an expansion stopped by `--rules.template.timeout`.
pub fn template_timeout_error(timeout: std::time::Duration) -> String {
    format!(
        "template expansion took longer than the {}s template time limit (--rules.template.timeout); expansion stopped",
        timeout.as_secs_f64()
    )
}

/// An `io::Write` that collects a template's output and fails as soon as it grows past
/// `limit` bytes, so an expansion ranging over a large query result stops there instead
/// of building the whole text first. Writes of exactly `<no value>` (what gtmpl prints for
/// a missing map key, removed afterwards as Prometheus's `map[string]string` prints "")
/// are not counted.
pub(crate) struct CappedWriter {
    buf: Vec<u8>,
    counted: usize,
    limit: usize,
    over: bool,
}

impl CappedWriter {
    pub(crate) fn new(limit: usize) -> CappedWriter {
        CappedWriter {
            buf: Vec::new(),
            counted: 0,
            limit,
            over: false,
        }
    }

    /// Whether a write went past the limit (the hit is counted by the caller, once).
    pub(crate) fn over(&self) -> bool {
        self.over
    }

    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if !self.over && b != b"<no value>" {
            if self.counted.saturating_add(b.len()) > self.limit {
                self.over = true;
            } else {
                self.counted += b.len();
            }
        }
        if self.over {
            return Err(std::io::Error::other(template_output_error(self.limit)));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How often a limit that can be hit once per sample is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Decides when a limit hit many times a second is logged: the first hit, then at most one
/// line per `every`, each line carrying the number of hits since the previous one.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    every: Duration,
    last: Option<Instant>,
    pending: u64,
}

impl LogThrottle {
    pub(crate) const fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            last: None,
            pending: 0,
        }
    }

    /// Notes one hit at `now`; `Some(n)` when a line is due, `n` the hits it reports.
    pub(crate) fn note(&mut self, now: Instant) -> Option<u64> {
        self.pending += 1;
        let due = self
            .last
            .is_none_or(|at| now.saturating_duration_since(at) >= self.every);
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// When the series limit was last logged.
static SERIES_LIMIT_LOG: Mutex<LogThrottle> = Mutex::new(LogThrottle::new(LOG_EVERY));

/// Counts an append refused by the storage's series limit (`--storage.max-series`) in
/// `lookout_evaluator_limit_hits_total{limit="storage_max_series"}`, one per refused sample,
/// and logs it at most once a minute with the number refused since the last line. Other
/// append errors are left to the caller. Returns whether `e` was the series limit.
pub fn count_append_error(e: &AppendError) -> bool {
    let AppendError::SeriesLimit { series, limit } = e else {
        return false;
    };
    hit("storage_max_series");
    let due = SERIES_LIMIT_LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .note(Instant::now());
    if let Some(refused) = due {
        tracing::warn!(
            limit = *limit,
            refused_samples = refused,
            example = %series,
            "Storage series limit reached (--storage.max-series): samples that would create a new series are refused, existing series keep taking samples"
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_file_over_the_limit_is_refused_with_the_limit_and_flag_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yml");
        std::fs::write(&path, "x".repeat(101)).unwrap();
        let before = hits("rule_file_size");
        let err = read_capped(&path, FileLimit::rule_file(100)).unwrap_err();
        assert!(
            err.to_string()
                .contains("100-byte rule file size limit (--rules.max-file-size)"),
            "{err}"
        );
        assert_eq!(hits("rule_file_size"), before + 1);
        std::fs::write(&path, "x".repeat(100)).unwrap();
        assert_eq!(
            read_capped(&path, FileLimit::rule_file(100)).unwrap().len(),
            100
        );
        let before = hits("config_file_size");
        let err = read_capped(&path, FileLimit::config_file(99)).unwrap_err();
        assert!(
            err.to_string()
                .contains("99-byte configuration file size limit (--config.max-file-size)"),
            "{err}"
        );
        assert_eq!(hits("config_file_size"), before + 1);
    }

    #[test]
    fn a_big_sparse_file_is_refused_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.yml");
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(MAX_RULE_FILE_BYTES + 1))
            .unwrap();
        let err = read_capped(&path, FileLimit::rule_file(MAX_RULE_FILE_BYTES)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(
            err.to_string()
                .contains("10485760-byte rule file size limit (--rules.max-file-size)"),
            "{err}"
        );
    }

    #[test]
    fn limits_without_a_flag_say_to_check_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(MAX_SECRET_FILE_BYTES + 1))
            .unwrap();
        let err = read_capped(&path, FileLimit::secret_file("password_file")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the file is larger than the 65536-byte password_file size limit; check that it is the right file"
        );
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_capped(dir.path(), FileLimit::config_file(100)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "is not a regular file");
        let err =
            read_capped(&dir.path().join("missing"), FileLimit::config_file(100)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    /// Files under /proc are regular but report a length of 0: the read itself stops past
    /// the limit.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_longer_than_its_reported_length_is_still_bounded() {
        let err = read_capped_bytes(
            Path::new("/proc/self/status"),
            FileLimit {
                bytes: 16,
                ..FileLimit::secret_file("credentials_file")
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("16-byte credentials_file size limit"),
            "{err}"
        );
    }

    #[test]
    fn a_file_over_the_limit_is_too_large_before_it_is_not_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.yml");
        std::fs::write(&path, "ééé").unwrap(); // 6 bytes
        let err = read_capped(&path, FileLimit::rule_file(3)).unwrap_err();
        assert!(
            err.to_string().contains("3-byte rule file size limit"),
            "{err}"
        );
        std::fs::write(&path, b"ok\xff").unwrap();
        let err = read_capped(&path, FileLimit::rule_file(3)).unwrap_err();
        assert!(
            err.to_string().starts_with("the file is not UTF-8 text"),
            "{err}"
        );
    }

    #[test]
    fn the_capped_writer_stops_at_the_limit() {
        let mut w = CappedWriter::new(10);
        w.write_all(b"12345").unwrap();
        w.write_all(b"<no value>").unwrap();
        w.write_all(b"67890").unwrap();
        assert!(!w.over());
        let e = w.write_all(b"x").unwrap_err();
        assert!(
            e.to_string().contains("10-byte template output limit"),
            "{e}"
        );
        assert!(w.over());
        // Once over, every later write fails too.
        assert!(w.write_all(b"<no value>").is_err());
        assert_eq!(w.into_inner(), b"12345<no value>67890");
    }

    #[test]
    fn query_limit_errors_are_counted() {
        let before = hits("query_max_samples");
        count_query_error(&QueryError::TooManySamples("selector x".into()));
        count_query_error(&QueryError::eval("some other failure"));
        assert_eq!(hits("query_max_samples"), before + 1);
    }

    #[test]
    fn series_limit_refusals_are_counted_per_sample() {
        let before = hits("storage_max_series");
        let e = AppendError::SeriesLimit {
            series: "m".into(),
            limit: 1,
        };
        assert!(count_append_error(&e));
        assert!(count_append_error(&e));
        assert!(!count_append_error(&AppendError::EmptyLabels));
        assert_eq!(hits("storage_max_series"), before + 2);
    }

    #[test]
    fn a_limit_hit_every_sample_is_logged_once_a_minute() {
        let mut log = LogThrottle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(log.note(t0), Some(1));
        let lines: Vec<u64> = (1..=1000)
            .filter_map(|i| log.note(t0 + Duration::from_millis(i * 100)))
            .collect();
        // 100 s of hits every 100 ms: one more line at 60 s, reporting the 600 hits since
        // the first line.
        assert_eq!(lines, vec![600]);
        assert_eq!(log.note(t0 + Duration::from_secs(121)), Some(401));
    }

    #[test]
    fn every_limit_is_in_the_exposition_from_the_start() {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in LIMIT_NAMES {
            assert!(
                text.contains(&format!(
                    "lookout_evaluator_limit_hits_total{{limit=\"{name}\"}}"
                )),
                "{name}: {text}"
            );
        }
    }
}
