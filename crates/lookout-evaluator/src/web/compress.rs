//! Response compression for `/api/v1/*`, as Prometheus's `httputil.CompressionHandler`
//! wraps its API: every answer says `Vary: Accept-Encoding`; the first of `gzip` or
//! `deflate` (zlib) listed in `Accept-Encoding` (comma-separated, compared exactly after
//! trimming spaces, so `gzip;q=0.5` is not `gzip`) encodes the body.
//!
//! A range query's answer is often several MB of JSON that compresses about tenfold; a
//! client across a network (Grafana asks for gzip) waits for every byte. Deflate is
//! zlib-rs (flate2's `zlib-rs` backend) at level 5 ([`LEVEL`]): in a one-off timing on the
//! 3.6 MB answer of bench/api's range `rate()` over 5,000 series it wrote 60 KiB in 17 ms,
//! where miniz_oxide
//! (the backend before) took 31 ms for 43 KiB at level 6, and zlib-rs at level 6 took 21 ms
//! for 71 KiB; level 1 is faster still but writes two to five times the bytes.
//! Prometheus's level 6 (Go's own deflate) wrote 106 KiB for twice that body. Large bodies
//! are compressed on the blocking pool, off the server's worker threads.

use std::io::Write;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flate2::Compression;

/// The deflate level of every answer (see the module's note).
const LEVEL: Compression = Compression::new(5);

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
        Encoding::Gzip if body.len() >= 2 * PIECE => gzip_in_pieces(body),
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(out, LEVEL);
            w.write_all(body)?;
            w.finish()
        }
        Encoding::Deflate => {
            let mut w = flate2::write::ZlibEncoder::new(out, LEVEL);
            w.write_all(body)?;
            w.finish()
        }
    }
}

/// Bodies of at least two pieces are compressed a piece per thread, up to one thread per
/// core (see [`gzip_in_pieces`]).
const PIECE: usize = 512 * 1024;

/// Gzip of a large body on every core at once, as `pigz` does: the body is cut into pieces
/// (whole multiples of [`PIECE`]), each compressed by a raw deflate stream of its own
/// that ends in a sync flush (an empty stored block: the bit stream is byte-aligned there,
/// so the next piece's blocks follow it as if one encoder had written both), the last one
/// ends the stream; one gzip header before them, the CRC-32 and length of the whole body
/// after. Each piece starts without the previous piece's 32 KiB window, which costs a few
/// hundred bytes per piece. Prometheus compresses on one goroutine; the largest range
/// answers spend most of their time here (BENCHMARKS.md, queries on persisted blocks).
fn gzip_in_pieces(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let threads = lookout_promql::parallel::cores()
        .min(body.len() / PIECE)
        .max(1);
    // Pieces of equal size, rounded up to a whole PIECE so none is tiny.
    let size = body.len().div_ceil(threads).div_ceil(PIECE) * PIECE;
    let pieces: Vec<(usize, &[u8])> = body.chunks(size).enumerate().collect();
    let last = pieces.len() - 1;
    let compressed =
        lookout_promql::parallel::map(pieces, |(i, piece)| deflate_piece(piece, i == last));
    let mut crc = flate2::Crc::new();
    crc.update(body);
    let mut out = Vec::with_capacity(body.len() / 8 + 64);
    // ID1 ID2, deflate, no flags, no time, no extra flags, unknown OS (as Go's gzip writes).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
    for piece in compressed {
        out.extend_from_slice(&piece?);
    }
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    Ok(out)
}

/// One piece of [`gzip_in_pieces`]: raw deflate at [`LEVEL`], ended by a sync
/// flush, or by the end of the stream when `last`.
fn deflate_piece(input: &[u8], last: bool) -> std::io::Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut c = Compress::new(LEVEL, false);
    let mut out = Vec::with_capacity(input.len() / 8 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let status = c
            .compress_vec(&input[consumed.min(input.len())..], &mut out, flush)
            .map_err(std::io::Error::other)?;
        let all_in = c.total_in() == input.len() as u64;
        match status {
            Status::StreamEnd => return Ok(out),
            // A sync flush is complete once all input is in and the output had room left.
            _ if !last && all_in && out.len() < out.capacity() => return Ok(out),
            Status::Ok | Status::BufError => {}
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

    /// A body large enough to be compressed in pieces decodes whole, with one gzip member
    /// (a single `GzDecoder`, not `MultiGzDecoder`), and compresses about as well as one
    /// encoder does.
    #[test]
    fn bodies_compressed_in_pieces_decode_to_the_original() {
        let mut body = Vec::new();
        let mut x: u64 = 1;
        while body.len() < 3 * PIECE + 12345 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body.extend_from_slice(
                format!(
                    "{{\"metric\":{{\"n\":\"{}\"}},\"v\":[{},\"{}\"]}},",
                    x % 5000,
                    x % 97,
                    x % 1000
                )
                .as_bytes(),
            );
        }
        for len in [2 * PIECE + 1, body.len()] {
            let part = &body[..len];
            let encoded = encode(Encoding::Gzip, part).unwrap();
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&encoded[..])
                .read_to_end(&mut out)
                .unwrap();
            assert!(out == part, "length {len}: decoded body differs");
            let mut one = flate2::write::GzEncoder::new(Vec::new(), LEVEL);
            one.write_all(part).unwrap();
            let one = one.finish().unwrap();
            assert!(
                encoded.len() <= one.len() + one.len() / 50 + 1024,
                "length {len}: {} bytes in pieces against {} in one stream",
                encoded.len(),
                one.len()
            );
        }
    }
}
