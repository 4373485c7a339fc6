//! Response compression for `/api/v1/*`, as Prometheus's `httputil.CompressionHandler`
//! wraps its API: every answer says `Vary: Accept-Encoding`; the first of `gzip` or
//! `deflate` (zlib) listed in `Accept-Encoding` (comma-separated, compared exactly after
//! trimming spaces, so `gzip;q=0.5` is not `gzip`) encodes the body.
//!
//! A range query's answer is often several MB of JSON that compresses about tenfold; a
//! client across a network (Grafana asks for gzip) waits for every byte. The default level
//! (6), as Prometheus's: on a 2.6 MB answer shaped like bench/api's range `rate()` over
//! 5,000 series it wrote 38 KB in 7 ms where level 1 wrote 238 KB in 3 ms (miniz's level
//! 1 finds few of the long repeats these answers are made of). Large bodies are compressed on the blocking pool, off the server's worker
//! threads.

use std::io::Write;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flate2::Compression;

/// Bodies at least this large are compressed on the blocking pool.
const BLOCKING_FROM: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Gzip,
    Deflate,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }
}

/// The encoding Prometheus would pick for these request headers.
fn choose(headers: &HeaderMap) -> Option<Encoding> {
    // Go's `Header.Get`: the first value only.
    let raw = headers.get(header::ACCEPT_ENCODING)?.to_str().ok()?;
    raw.split(',').find_map(|e| match e.trim() {
        "gzip" => Some(Encoding::Gzip),
        "deflate" => Some(Encoding::Deflate),
        _ => None,
    })
}

fn encode(enc: Encoding, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let out = Vec::with_capacity(body.len() / 8 + 64);
    match enc {
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(out, Compression::default());
            w.write_all(body)?;
            w.finish()
        }
        Encoding::Deflate => {
            let mut w = flate2::write::ZlibEncoder::new(out, Compression::default());
            w.write_all(body)?;
            w.finish()
        }
    }
}

/// The middleware (`axum::middleware::from_fn(compress)`).
pub async fn compress(req: Request, next: Next) -> Response {
    let enc = choose(req.headers());
    let mut res = next.run(req).await;
    res.headers_mut()
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let Some(enc) = enc else {
        return res;
    };
    let (mut parts, body) = res.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading response: {e}"),
            )
                .into_response();
        }
    };
    let encoded = if body.len() >= BLOCKING_FROM {
        tokio::task::spawn_blocking(move || encode(enc, &body))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    } else {
        encode(enc, &body)
    };
    match encoded {
        Ok(encoded) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(enc.name()),
            );
            Response::from_parts(parts, Body::from(encoded))
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("compressing response: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn encoding_chosen_as_prometheus_does() {
        assert_eq!(choose(&HeaderMap::new()), None);
        assert_eq!(choose(&headers("gzip")), Some(Encoding::Gzip));
        assert_eq!(
            choose(&headers("br, deflate, gzip")),
            Some(Encoding::Deflate)
        );
        assert_eq!(choose(&headers("gzip, deflate, br")), Some(Encoding::Gzip));
        assert_eq!(choose(&headers(" identity , gzip ")), Some(Encoding::Gzip));
        assert_eq!(choose(&headers("gzip;q=1.0")), None);
        assert_eq!(choose(&headers("br, zstd")), None);
    }

    #[test]
    fn encoded_bodies_decode_to_the_original() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.repeat(50);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&encode(Encoding::Gzip, &body).unwrap()[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
        out.clear();
        flate2::read::ZlibDecoder::new(&encode(Encoding::Deflate, &body).unwrap()[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}
