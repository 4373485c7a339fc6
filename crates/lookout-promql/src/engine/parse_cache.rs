//! Parsed expressions kept by their text, for callers that evaluate the same few texts
//! over and over (rule evaluation: every rule's expression at every interval).
//!
//! Parsing is not cheap: promql-parser compiles every regex matcher of the expression
//! while parsing, and the depth pre-scan and the duration rewrite read the whole text. A
//! rule with one regex matcher spent about 100 µs per evaluation parsing, more than
//! evaluating it on a small storage. With the cache each distinct text is parsed (and its
//! depth checked) once, and every later evaluation shares the parsed tree.
//!
//! The cache is bounded, as texts may come from outside (a template's `query` call can
//! build its text from label values): at most [`ParseCache::capacity`] entries and
//! [`MAX_GENERATION_BYTES`] of text per generation, and no text longer than
//! [`MAX_CACHED_TEXT`]. Two generations give least-recently-used eviction without
//! bookkeeping on every hit: new entries go into the current one; when it is full it
//! becomes the previous one (the older previous one is dropped), and a hit in the
//! previous generation moves the entry back into the current one. A working set that fits
//! in one generation is therefore never evicted, whatever else passes through.
//!
//! Only successful parses are kept: an invalid text is parsed again, and fails again, each
//! time. Texts are parsed for an instant query (duration expressions see step and range
//! 0), with the `max_depth` the cache was made with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use promql_parser::parser::Expr;

use super::{QueryError, parse_with_depth};

/// Longest text kept.
pub const MAX_CACHED_TEXT: usize = 64 * 1024;

/// Most text bytes one generation holds.
pub const MAX_GENERATION_BYTES: usize = 8 * 1024 * 1024;

/// Default number of entries one generation holds.
pub const DEFAULT_CAPACITY: usize = 4096;

#[derive(Default)]
struct Generation {
    entries: HashMap<String, Arc<Expr>>,
    bytes: usize,
}

impl Generation {
    fn insert(&mut self, text: &str, expr: Arc<Expr>) {
        self.bytes += text.len();
        self.entries.insert(text.to_string(), expr);
    }
}

#[derive(Default)]
struct Generations {
    current: Generation,
    previous: Generation,
}

/// A bounded cache of parsed expressions by text (see the module documentation).
pub struct ParseCache {
    max_depth: usize,
    capacity: usize,
    inner: Mutex<Generations>,
}

impl std::fmt::Debug for ParseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParseCache")
            .field("max_depth", &self.max_depth)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl ParseCache {
    /// A cache parsing with depth limit `max_depth`, [`DEFAULT_CAPACITY`] entries per
    /// generation.
    pub fn new(max_depth: usize) -> ParseCache {
        ParseCache::with_capacity(max_depth, DEFAULT_CAPACITY)
    }

    /// A cache of `capacity` entries per generation (at least 1).
    pub fn with_capacity(max_depth: usize, capacity: usize) -> ParseCache {
        ParseCache {
            max_depth,
            capacity: capacity.max(1),
            inner: Mutex::new(Generations::default()),
        }
    }

    /// Entries per generation.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held now (both generations).
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.current.entries.len() + g.previous.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parsed expression of `text`, parsed now unless it is held.
    pub fn parse(&self, text: &str) -> Result<Arc<Expr>, QueryError> {
        if let Some(expr) = self.lookup(text) {
            return Ok(expr);
        }
        // Parsed outside the lock: another thread may parse the same text meanwhile, and
        // one of the two results is kept.
        let expr = Arc::new(parse_with_depth(text, self.max_depth)?);
        if text.len() <= MAX_CACHED_TEXT {
            self.insert(text, expr.clone());
        }
        Ok(expr)
    }

    fn lookup(&self, text: &str) -> Option<Arc<Expr>> {
        let mut g = self.lock();
        if let Some(expr) = g.current.entries.get(text) {
            return Some(expr.clone());
        }
        let expr = g.previous.entries.remove(text)?;
        g.previous.bytes -= text.len();
        self.insert_locked(&mut g, text, expr.clone());
        Some(expr)
    }

    fn insert(&self, text: &str, expr: Arc<Expr>) {
        let mut g = self.lock();
        if !g.current.entries.contains_key(text) {
            self.insert_locked(&mut g, text, expr);
        }
    }

    fn insert_locked(&self, g: &mut Generations, text: &str, expr: Arc<Expr>) {
        let full = g.current.entries.len() >= self.capacity
            || g.current.bytes + text.len() > MAX_GENERATION_BYTES;
        if full {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(text, expr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_parsed_once_and_shared() {
        let cache = ParseCache::new(256);
        let a = cache
            .parse("sum by (job) (up{job=~\"api|web\"})")
            .expect("parses");
        let b = cache
            .parse("sum by (job) (up{job=~\"api|web\"})")
            .expect("parses");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn errors_are_not_kept_and_the_depth_limit_applies() {
        let cache = ParseCache::new(3);
        assert!(cache.parse("sum(").is_err());
        assert!(cache.parse("((((((1))))))").is_err());
        assert!(cache.is_empty());
        assert!(cache.parse("1 + 1").is_ok());
    }

    #[test]
    fn a_working_set_that_fits_a_generation_survives_a_stream_of_others() {
        let cache = ParseCache::with_capacity(256, 4);
        let hot = cache.parse("rate(x[5m])").expect("parses");
        for i in 0..100 {
            cache.parse(&format!("y{i}")).expect("parses");
            // The hot text is read between the others, as a rule at every interval.
            let again = cache.parse("rate(x[5m])").expect("parses");
            assert!(Arc::ptr_eq(&hot, &again), "evicted after {i}");
        }
        assert!(cache.len() <= 2 * cache.capacity());
    }

    #[test]
    fn long_texts_are_parsed_but_not_kept() {
        let cache = ParseCache::new(256);
        let long = format!("x{{a=\"{}\"}}", "v".repeat(MAX_CACHED_TEXT));
        let a = cache.parse(&long).expect("parses");
        let b = cache.parse(&long).expect("parses");
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(cache.is_empty());
    }
}
