//! Reading a response body the way blackbox_exporter does, with bounded memory.
//!
//! blackbox_exporter counts the body (decoded per `compression`) and reads it whole only
//! when a `fail_if_body_*` regexp needs it; its default is no size limit. Here the body
//! streams through the decoder into a [`Sink`] that counts every byte and keeps them only
//! when a regexp needs them, so an unlimited body costs no memory unless it must be matched.
//!
//! * `body_size_limit` (when set) stops the read at exactly that many decoded bytes, as Go's
//!   `http.MaxBytesReader`: the length reported is the limit, reason `body_too_large`.
//! * A body that a regexp or a CEL expression (`fail_if_body_json_*_cel`) needs is kept up
//!   to `body_size_limit`, or when the module sets none up to
//!   `--probe.max-regexp-body-bytes`: past it the probe fails with `body_too_large` and a
//!   message naming the flag. This bound is Lookout's (blackbox reads such a body whole
//!   into memory).

use std::io::Write;

use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::config::{Compression, HttpProbe};
use crate::prober::{Failure, reason};

/// What reading a body gave.
#[derive(Debug, Default)]
pub(super) struct Body {
    /// Decoded bytes read (at most the limit that stopped the read).
    pub len: u64,
    /// The decoded body, when a regexp needs it and it was read whole.
    pub text: Option<Vec<u8>>,
    /// Why the read stopped early or failed, if it did.
    pub error: Option<Failure>,
}

/// Which bound stopped a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// The module's `body_size_limit`.
    Limit(u64),
    /// `--probe.max-regexp-body-bytes`, for a body a regexp needs.
    Regexp(u64),
}

/// Counts decoded bytes, keeps them when asked, and stops at the first bound.
#[derive(Debug)]
struct Sink {
    len: u64,
    limit: Option<u64>,
    kept: Option<(Vec<u8>, u64)>,
    hit: Option<Bound>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut take = buf.len() as u64;
        if let Some(limit) = self.limit {
            let room = limit.saturating_sub(self.len);
            if take > room {
                take = room;
                self.hit = Some(Bound::Limit(limit));
            }
        }
        if let Some((kept, cap)) = &mut self.kept {
            let room = cap.saturating_sub(kept.len() as u64);
            if take > room {
                take = room;
                self.hit.get_or_insert(Bound::Regexp(*cap));
            }
            // `take` never exceeds `buf.len()`, so the conversion cannot truncate.
            kept.extend_from_slice(&buf[..usize::try_from(take).unwrap_or(buf.len())]);
        }
        self.len += take;
        match self.hit {
            Some(_) => Err(std::io::Error::other("body bound reached")),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The decoder `compression` asks for, writing into the sink.
enum Decoder {
    Plain(Sink),
    Gzip(Box<flate2::write::MultiGzDecoder<Sink>>),
    Deflate(Box<flate2::write::DeflateDecoder<Sink>>),
    Br(Box<brotli_decompressor::DecompressorWriter<Sink>>),
}

impl Decoder {
    fn new(compression: Compression, sink: Sink) -> Decoder {
        match compression {
            Compression::None | Compression::Identity => Decoder::Plain(sink),
            Compression::Gzip => Decoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(sink))),
            // Go's compress/flate, as blackbox_exporter uses: raw DEFLATE without a zlib
            // wrapper.
            Compression::Deflate => {
                Decoder::Deflate(Box::new(flate2::write::DeflateDecoder::new(sink)))
            }
            Compression::Br => Decoder::Br(Box::new(brotli_decompressor::DecompressorWriter::new(
                sink, 4096,
            ))),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Decoder::Plain(s) => s.write_all(data),
            Decoder::Gzip(d) => d.write_all(data),
            Decoder::Deflate(d) => d.write_all(data),
            Decoder::Br(d) => d.write_all(data),
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Decoder::Plain(_) => Ok(()),
            Decoder::Gzip(d) => d.try_finish(),
            Decoder::Deflate(d) => d.try_finish(),
            Decoder::Br(d) => d.close(),
        }
    }

    fn sink(&self) -> &Sink {
        match self {
            Decoder::Plain(s) => s,
            Decoder::Gzip(d) => d.get_ref(),
            Decoder::Deflate(d) => d.get_ref(),
            Decoder::Br(d) => d.get_ref(),
        }
    }

    fn into_sink(self) -> Option<Sink> {
        match self {
            Decoder::Plain(s) => Some(s),
            Decoder::Gzip(d) => (*d).finish().ok(),
            Decoder::Deflate(d) => (*d).finish().ok(),
            Decoder::Br(d) => Some((*d).into_inner().unwrap_or_else(|sink| sink)),
        }
    }
}

/// Reads `body` to its end (or the first bound), decoded per `compression`. `keep` says a
/// regexp needs the text; `regexp_bound` is `--probe.max-regexp-body-bytes`.
pub(super) async fn read(
    mut body: Incoming,
    cfg: &HttpProbe,
    keep: bool,
    regexp_bound: u64,
) -> Body {
    let limit = cfg.body_size_limit;
    let sink = Sink {
        len: 0,
        limit,
        kept: keep.then(|| (Vec::new(), limit.unwrap_or(regexp_bound))),
        hit: None,
    };
    let mut decoder = Decoder::new(cfg.compression, sink);
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if let Err(e) = decoder.write_all(&data) {
                    error = Some(e);
                    break;
                }
            }
            Err(e) => {
                let failure = Failure::new(
                    reason::HTTP_REQUEST,
                    format!("error reading response body: {e}"),
                );
                return done(decoder.sink(), Some(failure));
            }
        }
    }
    if error.is_none() {
        error = decoder.finish().err();
    }
    let failure = error.map(|e| {
        let sink = decoder.sink();
        match sink.hit {
            Some(bound) => too_large(bound),
            None => Failure::new(
                reason::DECOMPRESSION,
                format!(
                    "failed to decompress the body as {}: {e}",
                    cfg.compression.as_str()
                ),
            ),
        }
    });
    if failure.is_some() {
        return done(decoder.sink(), failure);
    }
    match decoder.into_sink() {
        Some(sink) => Body {
            len: sink.len,
            text: sink.kept.map(|(kept, _)| kept),
            error: None,
        },
        None => Body {
            error: Some(Failure::new(
                reason::DECOMPRESSION,
                format!(
                    "failed to decompress the body as {}",
                    cfg.compression.as_str()
                ),
            )),
            ..Body::default()
        },
    }
}

fn done(sink: &Sink, error: Option<Failure>) -> Body {
    Body {
        len: sink.len,
        text: None,
        error,
    }
}

fn too_large(bound: Bound) -> Failure {
    let message = match bound {
        Bound::Limit(limit) => {
            format!("response body is larger than body_size_limit ({limit} bytes)")
        }
        Bound::Regexp(bound) => format!(
            "response body is larger than {bound} bytes, the most a body regexp is matched \
             against when the module sets no body_size_limit (--probe.max-regexp-body-bytes)"
        ),
    };
    Failure::new(reason::BODY_TOO_LARGE, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(limit: Option<u64>, keep: Option<u64>) -> Sink {
        Sink {
            len: 0,
            limit,
            kept: keep.map(|cap| (Vec::new(), cap)),
            hit: None,
        }
    }

    #[test]
    fn the_limit_counts_exactly_the_limit_as_go_max_bytes_reader() {
        let mut s = sink(Some(100), None);
        assert!(s.write_all(&[b'x'; 60]).is_ok());
        assert!(s.write_all(&[b'x'; 41]).is_err());
        assert_eq!(s.len, 100);
        assert_eq!(s.hit, Some(Bound::Limit(100)));
        // Exactly the limit is fine.
        let mut s = sink(Some(100), None);
        assert!(s.write_all(&[b'x'; 100]).is_ok());
        assert_eq!(s.hit, None);
    }

    #[test]
    fn unlimited_bodies_are_counted_not_kept_unless_a_regexp_needs_them() {
        let mut s = sink(None, None);
        for _ in 0..1000 {
            assert!(s.write_all(&[b'x'; 65_536]).is_ok());
        }
        assert_eq!(s.len, 65_536_000);
        assert!(s.kept.is_none());

        let mut s = sink(None, Some(10));
        assert!(s.write_all(b"hello").is_ok());
        assert!(s.write_all(b"hello world").is_err());
        assert_eq!(s.hit, Some(Bound::Regexp(10)));
        assert_eq!(
            s.kept.as_ref().map(|(k, _)| k.as_slice()),
            Some(&b"hellohello"[..])
        );
        assert!(
            too_large(Bound::Regexp(10))
                .message
                .contains("--probe.max-regexp-body-bytes")
        );
    }
}
