//! Label sets: the identity of a series.
//!
//! A label set is stored as one shared, immutable string holding every pair in name
//! order, each name and value preceded by its length (the layout Prometheus's
//! `stringlabels` build uses). Query evaluation builds a new label set for most results
//! (`__name__` dropped, a `group_left` label added) and reads many more (join signatures,
//! grouping keys, sorting): with one allocation per set instead of one per name and value,
//! building and freeing a set costs one `malloc`/`free`, and reading one touches one or
//! two cache lines instead of a vector plus a string per name and value.
//!
//! Lengths are written in 6-bit groups as ASCII bytes (`0x40` marks that another group
//! follows), so the buffer stays valid UTF-8 and names and values are sliced out of it as
//! `&str` without checks or `unsafe`.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// The reserved label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A set of labels, sorted by name, without empty values (an empty value means "absent").
/// Cloning is cheap (the encoded pairs are shared), which matters because query
/// evaluation hands the same label sets around at every step.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Labels(Arc<str>);

impl Default for Labels {
    fn default() -> Labels {
        Labels(Arc::from(""))
    }
}

/// Appends `n` in 6-bit groups, lowest first; every byte but the last has `0x40` set.
fn push_len(buf: &mut String, mut n: usize) {
    loop {
        let group = (n & 0x3f) as u8;
        n >>= 6;
        if n == 0 {
            buf.push(char::from(group));
            return;
        }
        buf.push(char::from(group | 0x40));
    }
}

/// Appends one encoded pair.
fn push_pair(buf: &mut String, name: &str, value: &str) {
    push_len(buf, name.len());
    buf.push_str(name);
    push_len(buf, value.len());
    buf.push_str(value);
}

/// Reads a length written by [`push_len`] at the start of `rest`; returns it and the text
/// after it.
fn read_len(rest: &str) -> (usize, &str) {
    let bytes = rest.as_bytes();
    let (mut n, mut shift, mut i) = (0usize, 0u32, 0usize);
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        n |= usize::from(b & 0x3f) << shift;
        if b & 0x40 == 0 {
            break;
        }
        shift += 6;
    }
    // The length bytes are ASCII, so `i` is a character boundary.
    (n, rest.get(i..).unwrap_or(""))
}

/// Splits the first `n` bytes off `rest` (a name or value written after its length).
fn take(rest: &str, n: usize) -> (&str, &str) {
    match (rest.get(..n), rest.get(n..)) {
        (Some(head), Some(tail)) => (head, tail),
        _ => (rest, ""),
    }
}

/// The length of the longest common prefix of `a` and `b`, eight bytes at a time.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or_default());
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Where the encoded pair starting at byte `at` of `s` ends (at most `s.len()`).
fn pair_end(s: &str, at: usize) -> usize {
    let (n, rest) = read_len(s.get(at..).unwrap_or(""));
    let (n, rest) = read_len(take(rest, n).1);
    s.len() - take(rest, n).1.len()
}

/// The pairs of an encoded label set, in order.
#[derive(Clone)]
struct Pairs<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        if self.rest.is_empty() {
            return None;
        }
        let (n, rest) = read_len(self.rest);
        let (name, rest) = take(rest, n);
        let (n, rest) = read_len(rest);
        let (value, rest) = take(rest, n);
        self.rest = rest;
        Some((name, value))
    }
}

thread_local! {
    /// Scratch buffer for encoding a new label set: the result is copied out of it into
    /// its one shared allocation.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Labels {
    /// Builds a label set from pairs in any order; empty values are dropped and for a
    /// repeated name the last value wins.
    pub fn new<I, N, V>(pairs: I) -> Labels
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(n, val)| (n.into(), val.into()))
            .collect();
        // A stable sort keeps repeated names in their given order, so the last of each run
        // is the value that wins; O(N log N) where a search per pair would be O(N²) (a
        // scraped series can have hundreds of thousands of labels).
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(&str, &str)> = Vec::with_capacity(v.len());
        for (k, val) in &v {
            match kept.last_mut() {
                Some(last) if last.0 == k => last.1 = val,
                _ => kept.push((k, val)),
            }
        }
        kept.retain(|(_, val)| !val.is_empty());
        Labels::from_sorted(kept)
    }

    /// Like [`Labels::new`] for pairs that must have distinct names (a parsed series):
    /// no copy of each pair, and one sort that also finds repeats. `Err(i)` when pair `i`
    /// repeats an earlier name (the first such `i`).
    pub fn try_from_distinct(pairs: &[(&str, &str)]) -> Result<Labels, usize> {
        let mut order: Vec<u32> = (0..u32::try_from(pairs.len()).unwrap_or(u32::MAX)).collect();
        let name = |i: u32| pairs[i as usize].0;
        order.sort_unstable_by(|&a, &b| name(a).cmp(name(b)).then(a.cmp(&b)));
        let repeat = order
            .windows(2)
            .filter(|w| name(w[0]) == name(w[1]))
            .map(|w| w[1] as usize)
            .min();
        if let Some(i) = repeat {
            return Err(i);
        }
        Ok(Labels::from_sorted(
            order
                .iter()
                .map(|&i| pairs[i as usize])
                .filter(|(_, v)| !v.is_empty()),
        ))
    }

    /// Encodes pairs already sorted by name, with distinct names and no empty values, in
    /// one allocation.
    pub(crate) fn from_sorted<'p>(pairs: impl IntoIterator<Item = (&'p str, &'p str)>) -> Labels {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                for (k, v) in pairs {
                    push_pair(&mut buf, k, v);
                }
                Labels(Arc::from(buf.as_str()))
            }
            // Only if encoding ever nested: use a buffer of its own.
            Err(_) => {
                let mut buf = String::new();
                for (k, v) in pairs {
                    push_pair(&mut buf, k, v);
                }
                Labels(Arc::from(buf))
            }
        })
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        for (k, v) in self.iter() {
            match k.cmp(name) {
                Ordering::Less => {}
                Ordering::Equal => return Some(v),
                Ordering::Greater => return None,
            }
        }
        None
    }

    /// The metric name (`__name__`), if set.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Sets `name` to `value` (removes it when `value` is empty).
    pub fn set(&mut self, name: &str, value: &str) {
        if self.get(name).unwrap_or("") == value {
            return;
        }
        *self = Labels::merged(self.iter(), std::iter::once((name, value)));
    }

    /// Sets every `(name, value)` of `pairs` (an empty value removes the name; of repeated
    /// names the last wins) in one pass over the labels: setting them one at a time would
    /// re-encode a wide label set once per pair.
    pub fn set_all<'p>(&mut self, pairs: impl IntoIterator<Item = (&'p str, &'p str)>) {
        let mut pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
        if pairs.iter().all(|&(k, v)| self.get(k).unwrap_or("") == v) {
            return;
        }
        pairs.reverse();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        pairs.dedup_by(|later, first| later.0 == first.0);
        *self = Labels::merged(self.iter(), pairs.into_iter());
    }

    /// The pairs of `base` with those of `overrides` put in: an override replaces the pair
    /// of the same name and an empty override value removes it. Both must be sorted by
    /// name with distinct names. One allocation.
    pub(crate) fn merged<'p>(
        base: impl Iterator<Item = (&'p str, &'p str)>,
        overrides: impl Iterator<Item = (&'p str, &'p str)>,
    ) -> Labels {
        let mut base = base.peekable();
        let mut overrides = overrides.peekable();
        Labels::from_sorted(std::iter::from_fn(move || {
            loop {
                let next = match (base.peek(), overrides.peek()) {
                    (None, None) => return None,
                    (Some(_), None) => base.next(),
                    (None, Some(_)) => overrides.next(),
                    (Some(b), Some(o)) => match b.0.cmp(o.0) {
                        Ordering::Less => base.next(),
                        Ordering::Greater => overrides.next(),
                        Ordering::Equal => {
                            base.next();
                            overrides.next()
                        }
                    },
                };
                match next {
                    Some((_, "")) => continue,
                    other => return other,
                }
            }
        }))
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) {
        self.set(name, "");
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        Pairs { rest: &self.0 }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Heap bytes of the shared encoding (the `Arc`'s two counters and the encoded pairs),
    /// for memory estimates.
    pub fn heap_bytes(&self) -> usize {
        2 * size_of::<usize>() + self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An identity for this label set's shared storage: clones share it, equal sets built
    /// separately do not. Only meaningful while the value (or a clone) is alive.
    pub fn ptr_id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }

    /// Keeps only the labels for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        if self.iter().all(|(k, v)| keep(k, v)) {
            return;
        }
        *self = Labels::from_sorted(self.iter().filter(|&(k, v)| keep(k, v)));
    }

    /// Whether `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Prometheus's `labels.String()` notation: every label, `__name__` included, inside
    /// braces (`{__name__="up", job="x"}`).
    pub fn to_braced_string(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(k);
            out.push('=');
            out.push_str(&format!("{v:?}"));
        }
        out.push('}');
        out
    }
}

impl Ord for Labels {
    /// Pair by pair: by name, then by value; a set that is a prefix of another sorts first.
    fn cmp(&self, other: &Labels) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return Ordering::Equal;
        }
        // Label sets being sorted mostly share their first pairs (the metric name, the job):
        // the encodings are equal up to the first differing byte, and every pair ending
        // before it is the same pair in both, so the pair-by-pair comparison starts at the
        // pair holding that byte (found by reading lengths only).
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let differ = common_prefix(a, b);
        let mut start = 0;
        while start < differ {
            let end = pair_end(&self.0, start);
            if end > differ {
                break;
            }
            start = end;
        }
        let (a, b) = (self.0.get(start..), other.0.get(start..));
        Pairs {
            rest: a.unwrap_or(""),
        }
        .cmp(Pairs {
            rest: b.unwrap_or(""),
        })
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Labels) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Labels {
    /// Prometheus's notation: `name{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.metric_name() {
            f.write_str(name)?;
        }
        f.write_str("{")?;
        let mut first = true;
        for (k, v) in self.iter().filter(|(k, _)| *k != METRIC_NAME) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_without_empty_values() {
        let l = Labels::new([("b", "2"), ("a", "1"), ("c", "")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn long_names_and_values_round_trip() {
        let long = "v".repeat(70_000);
        let name = "n".repeat(65);
        let l = Labels::new([("a", "1"), (name.as_str(), long.as_str()), ("b", "é")]);
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            vec![("a", "1"), ("b", "é"), (name.as_str(), long.as_str())]
        );
        assert_eq!(l.get(&name), Some(long.as_str()));
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn order_is_pair_by_pair() {
        let a = Labels::new([("a", "1")]);
        let ab = Labels::new([("a", "1"), ("b", "0")]);
        let a2 = Labels::new([("a", "2")]);
        let b = Labels::new([("b", "0")]);
        // Lengths are encoded, yet "a"="1" < "a"="10" < "a"="2" as strings compare.
        let a10 = Labels::new([("a", "10")]);
        let mut v = vec![a2.clone(), ab.clone(), a10.clone(), a.clone(), b.clone()];
        v.sort();
        assert_eq!(v, vec![a, ab, a10, a2, b]);
    }

    /// The comparison that skips the common prefix orders as comparing pair by pair does,
    /// over sets sharing prefixes of every kind: a value that is a prefix of another, names
    /// and values around the 64 bytes where a length takes two bytes, a set ending early.
    #[test]
    fn order_skipping_the_common_prefix_matches_pair_by_pair() {
        let names = ["__name__", "a", "ab", "b", &"n".repeat(63), &"n".repeat(64)];
        let values = [
            "",
            "1",
            "10",
            "2",
            "x",
            &"v".repeat(63),
            &"v".repeat(64),
            &"v".repeat(70),
        ];
        let mut rng: u64 = 7;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let sets: Vec<Labels> = (0..400)
            .map(|_| {
                let pairs: Vec<(&str, &str)> = (0..next(5))
                    .map(|_| (names[next(names.len())], values[next(values.len())]))
                    .collect();
                Labels::new(pairs)
            })
            .collect();
        for a in &sets {
            for b in &sets {
                assert_eq!(a.cmp(b), a.iter().cmp(b.iter()), "{a} against {b}");
            }
        }
    }

    #[test]
    fn set_inserts_replaces_and_removes() {
        let mut l = Labels::new([("b", "2")]);
        let shared = l.clone();
        l.set("a", "1");
        l.set("c", "3");
        l.set("b", "20");
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            vec![("a", "1"), ("b", "20"), ("c", "3")]
        );
        l.remove("a");
        l.retain(|k, _| k != "c");
        assert_eq!(l, Labels::new([("b", "20")]));
        assert_eq!(shared.iter().collect::<Vec<_>>(), vec![("b", "2")]);
        assert!(Labels::default().is_empty());
        assert_eq!(Labels::new([("x", "")]), Labels::default());
    }

    #[test]
    fn set_all_equals_setting_one_at_a_time() {
        let base = Labels::new([("__name__", "m"), ("b", "2"), ("d", "4")]);
        let pairs = [("c", "3"), ("b", "20"), ("a", "1"), ("d", ""), ("c", "30")];
        let mut one_by_one = base.clone();
        for (k, v) in pairs {
            one_by_one.set(k, v);
        }
        let mut at_once = base.clone();
        at_once.set_all(pairs);
        assert_eq!(at_once, one_by_one);
        assert_eq!(at_once.to_string(), "m{a=\"1\", b=\"20\", c=\"30\"}");
        let mut unchanged = base.clone();
        unchanged.set_all([("b", "2"), ("x", "")]);
        assert_eq!(unchanged.ptr_id(), base.ptr_id());
    }

    #[test]
    fn set_and_remove_keep_order() {
        let mut l = Labels::new([("__name__", "up"), ("job", "x")]);
        l.set("instance", "h:1");
        l.remove("job");
        assert_eq!(l.to_string(), "up{instance=\"h:1\"}");
    }
}
