//! Exporter-wide bounds on what comes from outside, set by command-line flags.
//!
//! | limit | default | flag | when hit | counted in |
//! |---|---|---|---|---|
//! | redirects one HTTP probe follows | 10 | `--probe.max-redirects` | probe fails, reason `too_many_redirects` | `lookout_exporter_probe_failures_total{reason}` |
//! | response head bytes (HTTP/1 status line and headers; HTTP/2 header list) | 64 KiB | `--probe.max-response-header-bytes` | probe fails, reason `headers_too_large` (HTTP/2: `http_request`, as h2 reports it like any malformed response; the message names the flag) | the same |
//! | response header fields (HTTP/1) | 100 | `--probe.max-response-header-fields` | probe fails, reason `headers_too_large` | the same |
//! | body kept for `fail_if_body_*` regexps and CEL expressions when a module sets no `body_size_limit` | 10 MiB | `--probe.max-regexp-body-bytes` | probe fails, reason `body_too_large` (blackbox_exporter reads such a body whole, unbounded) | `lookout_exporter_probe_failures_total{reason}` |
//! | gRPC response message (a health answer is 2 bytes) | 64 KiB | fixed ([`crate::prober::GRPC_MAX_MESSAGE_BYTES`]) | probe fails, reason `grpc_response`, `probe_grpc_status_code` 8 (`RESOURCE_EXHAUSTED`, as a gRPC client over its receive limit) | `lookout_exporter_probe_failures_total{reason}` |
//! | configuration file size | 4 MiB | `--config.max-file-size` | start-up fails; a reload keeps the running configuration | `lookout_exporter_limit_hits_total{limit="config_file_size"}` |
//!
//! Per-module limits (`http.body_size_limit`, `timeout`) live in the configuration file;
//! concurrency limits (`--probe.concurrency`, `--web.max-concurrent-probes`) in
//! [`crate::RunOptions`]. The [`Limits`] travel with every probe in
//! [`crate::prober::ProbeRequest::limits`], so `/probe` and the continuous targets obey the
//! same flags.

/// `--probe.max-redirects` default (blackbox_exporter follows at most 10).
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;
/// `--probe.max-response-header-bytes` default (64 KiB).
pub const DEFAULT_MAX_RESPONSE_HEADER_BYTES: usize = 64 << 10;
/// `--probe.max-response-header-fields` default (hyper's own default).
pub const DEFAULT_MAX_RESPONSE_HEADER_FIELDS: usize = 100;
/// `--probe.max-regexp-body-bytes` default (10 MiB).
pub const DEFAULT_MAX_REGEXP_BODY_BYTES: u64 = 10 << 20;
/// `--config.max-file-size` default (4 MiB).
pub const DEFAULT_MAX_CONFIG_FILE_BYTES: u64 = 4 << 20;

/// Smallest `--probe.max-response-header-bytes`: the HTTP/1 read buffer is capped at the head
/// limit, and hyper refuses (panics on) a read buffer smaller than 8 KiB.
pub const MIN_RESPONSE_HEADER_BYTES: usize = 8 << 10;
/// Largest `--probe.max-response-header-bytes`: HTTP/2 carries the header list limit
/// (`SETTINGS_MAX_HEADER_LIST_SIZE`) as a 32-bit number.
pub const MAX_RESPONSE_HEADER_BYTES: usize = u32::MAX as usize;
/// Largest `--probe.max-response-header-fields`: hyper allocates room for every allowed
/// field (64 bytes each) for each response it parses, so the bound keeps that allocation
/// under 1 MiB per probe.
pub const MAX_RESPONSE_HEADER_FIELDS: usize = 10_000;

/// The `limit` label values of `lookout_exporter_limit_hits_total`. Probe-side limits are
/// counted by failure reason in `lookout_exporter_probe_failures_total` instead.
pub const LIMIT_NAMES: [&str; 1] = [CONFIG_FILE_SIZE];
/// `limit="config_file_size"`: a configuration file over `--config.max-file-size`.
pub const CONFIG_FILE_SIZE: &str = "config_file_size";

/// The exporter's limits (the flags above); [`Limits::default`] has the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most redirects one HTTP probe follows (`--probe.max-redirects`); `0` fails the probe
    /// on the first redirect. A module's `follow_redirects: false` follows none and takes
    /// the redirect response as the final one, as blackbox_exporter does.
    pub max_redirects: u32,
    /// Largest response head in bytes (`--probe.max-response-header-bytes`): HTTP/1 status
    /// line and headers, HTTP/2 header list size.
    pub max_response_header_bytes: usize,
    /// Most response header fields over HTTP/1 (`--probe.max-response-header-fields`);
    /// HTTP/2 heads are bounded by the byte limit only.
    pub max_response_header_fields: usize,
    /// Largest body kept in memory for a module's `fail_if_body_*` regexps and CEL
    /// expressions when the module sets no `body_size_limit`
    /// (`--probe.max-regexp-body-bytes`); bodies neither needs are counted, not kept, and
    /// are unlimited as in blackbox_exporter.
    pub max_regexp_body_bytes: u64,
    /// Largest configuration file read, at start-up and on every reload
    /// (`--config.max-file-size`).
    pub max_config_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_redirects: DEFAULT_MAX_REDIRECTS,
            max_response_header_bytes: DEFAULT_MAX_RESPONSE_HEADER_BYTES,
            max_response_header_fields: DEFAULT_MAX_RESPONSE_HEADER_FIELDS,
            max_regexp_body_bytes: DEFAULT_MAX_REGEXP_BODY_BYTES,
            max_config_file_bytes: DEFAULT_MAX_CONFIG_FILE_BYTES,
        }
    }
}

/// A limit set to a value the exporter cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --{flag}={value}: {why}")]
pub struct LimitError {
    /// The flag, without the leading dashes (`probe.max-response-header-bytes`).
    pub flag: &'static str,
    /// The value given.
    pub value: String,
    /// Why it is refused and what is accepted.
    pub why: String,
}

impl Limits {
    /// Checks every limit against what the probers can take; the error names the flag.
    pub fn validate(&self) -> Result<(), LimitError> {
        check_response_header_bytes(self.max_response_header_bytes)?;
        check_response_header_fields(self.max_response_header_fields)?;
        check_config_file_bytes(self.max_config_file_bytes)?;
        check_regexp_body_bytes(self.max_regexp_body_bytes)?;
        Ok(())
    }
}

/// Checks a `--probe.max-response-header-bytes` value.
pub fn check_response_header_bytes(bytes: usize) -> Result<usize, LimitError> {
    if (MIN_RESPONSE_HEADER_BYTES..=MAX_RESPONSE_HEADER_BYTES).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(LimitError {
            flag: "probe.max-response-header-bytes",
            value: bytes.to_string(),
            why: format!(
                "must be between {MIN_RESPONSE_HEADER_BYTES} bytes (8KiB, the smallest \
                 response buffer hyper accepts) and {MAX_RESPONSE_HEADER_BYTES} bytes (the \
                 largest HTTP/2 header list size)"
            ),
        })
    }
}

/// Checks a `--probe.max-response-header-fields` value.
pub fn check_response_header_fields(fields: usize) -> Result<usize, LimitError> {
    if (1..=MAX_RESPONSE_HEADER_FIELDS).contains(&fields) {
        Ok(fields)
    } else {
        Err(LimitError {
            flag: "probe.max-response-header-fields",
            value: fields.to_string(),
            why: format!(
                "must be between 1 and {MAX_RESPONSE_HEADER_FIELDS} (room for each field is \
                 allocated for every response parsed)"
            ),
        })
    }
}

/// Checks a `--probe.max-regexp-body-bytes` value.
pub fn check_regexp_body_bytes(bytes: u64) -> Result<u64, LimitError> {
    if bytes == 0 {
        return Err(LimitError {
            flag: "probe.max-regexp-body-bytes",
            value: bytes.to_string(),
            why: "must be at least 1 byte (0 would fail every probe with a body regexp)".into(),
        });
    }
    Ok(bytes)
}

/// Checks a `--config.max-file-size` value.
pub fn check_config_file_bytes(bytes: u64) -> Result<u64, LimitError> {
    if bytes == 0 {
        return Err(LimitError {
            flag: "config.max-file-size",
            value: bytes.to_string(),
            why: "must be at least 1 byte (0 would refuse every configuration file)".into(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn out_of_range_values_name_their_flag() {
        let small = Limits {
            max_response_header_bytes: 100,
            ..Limits::default()
        };
        let e = small.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("invalid --probe.max-response-header-bytes=100: must be between 8192"),
            "{e}"
        );
        let huge = Limits {
            max_response_header_bytes: MAX_RESPONSE_HEADER_BYTES + 1,
            ..Limits::default()
        };
        assert_eq!(
            huge.validate().unwrap_err().flag,
            "probe.max-response-header-bytes"
        );
        for fields in [0, MAX_RESPONSE_HEADER_FIELDS + 1] {
            let l = Limits {
                max_response_header_fields: fields,
                ..Limits::default()
            };
            assert_eq!(
                l.validate().unwrap_err().flag,
                "probe.max-response-header-fields"
            );
        }
        let l = Limits {
            max_config_file_bytes: 0,
            ..Limits::default()
        };
        assert_eq!(l.validate().unwrap_err().flag, "config.max-file-size");
        // The edges themselves are accepted, and so is following no redirect at all.
        let edges = Limits {
            max_redirects: 0,
            max_response_header_bytes: MIN_RESPONSE_HEADER_BYTES,
            max_response_header_fields: MAX_RESPONSE_HEADER_FIELDS,
            max_regexp_body_bytes: 1,
            max_config_file_bytes: 1,
        };
        assert_eq!(edges.validate(), Ok(()));
    }
}
