//! `http_headers` (Prometheus common's `headersRoundTripper`): every listed value is added
//! to the request (after `headers:`, which set), in the order values, secrets, files; a file
//! is read at every request, trimmed, at most 64 KiB (a file that cannot be read fails the
//! probe, reason `http_request`, as common's round tripper fails the request).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::super::{Failure, reason};
use crate::config::HttpProbe;

/// Adds `cfg.http_headers` to `headers`.
pub(super) fn add_http_headers(cfg: &HttpProbe, headers: &mut HeaderMap) -> Result<(), Failure> {
    let bad = |m: String| Failure::new(reason::HTTP_REQUEST, m);
    for (name, spec) in &cfg.http_headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| bad(format!("invalid header name {name:?}: {e}")))?;
        let mut values: Vec<String> = spec.values.iter().chain(&spec.secrets).cloned().collect();
        for path in &spec.files {
            values.push(super::read_secret(path, "http_headers file")?);
        }
        for v in values {
            let value = HeaderValue::from_str(&v)
                .map_err(|e| bad(format!("invalid value for header {name:?}: {e}")))?;
            headers.append(header.clone(), value);
        }
    }
    Ok(())
}
