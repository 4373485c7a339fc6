//! Bounds on what comes from outside the evaluator, and the counter of limits hit.
//!
//! | limit | default | where set |
//! |---|---|---|
//! | configuration file size | [`MAX_CONFIG_FILE_BYTES`] | constant |
//! | rule file size | [`MAX_RULE_FILE_BYTES`] | constant |
//! | expanded label/annotation template | [`MAX_TEMPLATE_OUTPUT_BYTES`] | constant |
//! | samples one query holds | 50,000,000 | `--query.max-samples` |
//! | one query's run time | 2m | `--query.timeout` |
//!
//! Scrape limits (`body_size_limit`, `sample_limit`, `label_limit`, ...) are per job in the
//! scrape configuration and counted by the `prometheus_target_scrapes_*` counters.
//!
//! Each limit hit is counted in `lookout_evaluator_limit_hits_total{limit}` (one of
//! [`LIMIT_NAMES`]) and named in the error it causes.

use std::io::Read as _;
use std::path::Path;
use std::sync::LazyLock;

use lookout_promql::engine::QueryError;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Largest configuration file read (1 MiB): a longer one is refused, not read into memory.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;
/// Largest rule file read (10 MiB).
pub const MAX_RULE_FILE_BYTES: u64 = 10 << 20;
/// Longest expansion of one label or annotation template (64 KiB); a longer one is replaced by
/// Prometheus's `<error expanding template: ...>` text naming this limit.
pub const MAX_TEMPLATE_OUTPUT_BYTES: usize = 64 << 10;

/// The `limit` label values of `lookout_evaluator_limit_hits_total`.
pub const LIMIT_NAMES: [&str; 5] = [
    "config_file_size",
    "rule_file_size",
    "template_output_size",
    "query_max_samples",
    "query_timeout",
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
        _ => {}
    }
}

/// Reads a UTF-8 file of at most `limit` bytes. A larger file is not read past the limit and
/// gives an `InvalidData` error naming the limit (`what` says which: "rule file", ...), and
/// the hit is counted under `counter`.
pub fn read_capped(
    path: &Path,
    limit: u64,
    what: &str,
    counter: &'static str,
) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(limit.saturating_add(1))
        .read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        hit(counter);
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is larger than the {limit}-byte {what} size limit; split it"),
        ));
    }
    Ok(text)
}

/// Refuses a template expansion longer than [`MAX_TEMPLATE_OUTPUT_BYTES`] (counted).
pub fn check_template_output(s: String) -> Result<String, String> {
    if s.len() > MAX_TEMPLATE_OUTPUT_BYTES {
        hit("template_output_size");
        return Err(format!(
            "expanded template is {} bytes, more than the {MAX_TEMPLATE_OUTPUT_BYTES}-byte template output limit",
            s.len()
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_limit_is_refused_with_the_limit_named() {
        let dir = std::env::temp_dir().join(format!("lookout-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.yml");
        std::fs::write(&path, "x".repeat(101)).unwrap();
        let before = hits("rule_file_size");
        let err = read_capped(&path, 100, "rule file", "rule_file_size").unwrap_err();
        assert!(
            err.to_string().contains("100-byte rule file size limit"),
            "{err}"
        );
        assert_eq!(hits("rule_file_size"), before + 1);
        std::fs::write(&path, "x".repeat(100)).unwrap();
        assert_eq!(
            read_capped(&path, 100, "rule file", "rule_file_size")
                .unwrap()
                .len(),
            100
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn template_output_over_the_limit_is_an_error() {
        assert!(check_template_output("a".repeat(MAX_TEMPLATE_OUTPUT_BYTES)).is_ok());
        let e = check_template_output("a".repeat(MAX_TEMPLATE_OUTPUT_BYTES + 1)).unwrap_err();
        assert!(e.contains("template output limit"), "{e}");
    }

    #[test]
    fn query_limit_errors_are_counted() {
        let before = hits("query_max_samples");
        count_query_error(&QueryError::TooManySamples("selector x".into()));
        count_query_error(&QueryError::eval("some other failure"));
        assert_eq!(hits("query_max_samples"), before + 1);
    }
}
