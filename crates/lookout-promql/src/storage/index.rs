//! The inverted index: label name → label value → sorted posting list of series ids, and
//! the evaluation of PromQL label matchers as intersections and differences of postings.
//!
//! Each matcher becomes either a *positive* set (the series it selects) or a *negative*
//! set (the series it rejects; every other series, those without the label included, is
//! selected). Positive sets are intersected smallest first, then negative sets are
//! subtracted; only when no matcher is positive does the result start from all series.
//! This gives Prometheus's semantics for matchers that match the empty string:
//! `{foo=""}`, `{foo!~".+"}` or `{foo=~"|a"}` also select series without `foo`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use promql_parser::label::{MatchOp, Matcher};
use regex::Regex;

use crate::labels::Labels;

/// Identifier of a series inside one storage; never reused, so appending a new series
/// keeps every posting list sorted. 64 bits so that no amount of series churn runs out
/// of identifiers (a `u32` would wrap after about four billion creations and break the
/// sorted order the postings rely on).
pub(crate) type SeriesId = u64;

/// A matcher ready to be evaluated: regexes compiled with Prometheus's flags.
#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    name: String,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Eq(String),
    Ne(String),
    /// A regex (negated for `!~`) with what the fast paths need.
    Re {
        re: Regex,
        negate: bool,
        matches_empty: bool,
        shape: Shape,
    },
}

/// Shapes of regex that the index answers without testing every value.
#[derive(Clone, Debug)]
enum Shape {
    /// `.*`: every value, the empty one included.
    Any,
    /// `.+`: every non-empty value.
    NonEmpty,
    /// `a|b|c` of literals (empty alternatives dropped: `matches_empty` records them).
    Set(Vec<String>),
    /// `prefix.*` with a literal prefix.
    Prefix(String),
    /// Anything else: each value of the label is tested.
    General,
}

const META: &[char] = &[
    '\\', '.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '^', '$', '|',
];

fn shape_of(pattern: &str) -> Shape {
    match pattern {
        ".*" => return Shape::Any,
        ".+" => return Shape::NonEmpty,
        _ => {}
    }
    if let Some(prefix) = pattern.strip_suffix(".*")
        && !prefix.contains(META)
    {
        return Shape::Prefix(prefix.to_string());
    }
    let alts: Vec<&str> = pattern.split('|').collect();
    if alts.iter().all(|a| !a.contains(META)) {
        let mut set: Vec<String> = alts
            .into_iter()
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        set.sort();
        set.dedup();
        return Shape::Set(set);
    }
    Shape::General
}

impl Prepared {
    /// Prepares `m`. `compile` turns a PromQL regex into an anchored, dot-matches-newline
    /// regex (Prometheus compiles `^(?s:…)$`) or `None`, in which case the regex the parser
    /// compiled is used.
    pub(crate) fn new(m: &Matcher, compile: &dyn Fn(&str) -> Option<Regex>) -> Prepared {
        let kind = match &m.op {
            MatchOp::Equal => Kind::Eq(m.value.clone()),
            MatchOp::NotEqual => Kind::Ne(m.value.clone()),
            MatchOp::Re(parsed) | MatchOp::NotRe(parsed) => {
                let re = compile(&m.value).unwrap_or_else(|| parsed.clone());
                let matches_empty = re.is_match("");
                Kind::Re {
                    matches_empty,
                    negate: matches!(m.op, MatchOp::NotRe(_)),
                    shape: shape_of(&m.value),
                    re,
                }
            }
        };
        Prepared {
            name: m.name.clone(),
            kind,
        }
    }

    /// Whether the matcher accepts a series with `labels` (an absent label counts as "").
    pub(crate) fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.name).unwrap_or("");
        match &self.kind {
            Kind::Eq(v) => v == value,
            Kind::Ne(v) => v != value,
            Kind::Re { re, negate, .. } => re.is_match(value) != *negate,
        }
    }
}

/// Appends `id` to a posting list. A full list grows by a quarter (at least 4 ids), where
/// `Vec::push` doubles it: the lists a burst of new series fills (`job`, `instance`, `le`,
/// every series) keep at most a quarter of spare room, not up to as much again: 1.2 MB less
/// of the heap's peak at 100,000 scraped series. The growth stays geometric, so an append
/// stays amortised O(1) however the series churn.
fn push(list: &mut Vec<SeriesId>, id: SeriesId) {
    if list.len() == list.capacity() {
        list.reserve_exact((list.len() / 4).max(4));
    }
    list.push(id);
}

/// Result of one matcher against the index.
enum Sel<'a> {
    /// Exactly these series.
    Pos(Cow<'a, [SeriesId]>),
    /// All series except these.
    Neg(Cow<'a, [SeriesId]>),
}

/// Label name → value → sorted series ids.
#[derive(Default)]
pub(crate) struct Index {
    postings: HashMap<String, BTreeMap<String, Vec<SeriesId>>>,
    all: Vec<SeriesId>,
}

impl Index {
    /// Adds a series; `id` must be greater than every id added before.
    pub(crate) fn add(&mut self, id: SeriesId, labels: &Labels) {
        push(&mut self.all, id);
        for (name, value) in labels.iter() {
            let values = match self.postings.get_mut(name) {
                Some(v) => v,
                None => self.postings.entry(name.to_string()).or_default(),
            };
            match values.get_mut(value) {
                Some(list) => push(list, id),
                None => {
                    values.insert(value.to_string(), vec![id]);
                }
            }
        }
    }

    /// Removes series (`dead` sorted by id, each with its labels).
    pub(crate) fn remove(&mut self, dead: &[(SeriesId, &Labels)]) {
        if dead.is_empty() {
            return;
        }
        let is_dead = |id: &SeriesId| dead.binary_search_by_key(id, |(d, _)| *d).is_ok();
        self.all.retain(|id| !is_dead(id));
        let mut touched: Vec<(&str, &str)> = dead.iter().flat_map(|(_, l)| l.iter()).collect();
        touched.sort_unstable();
        touched.dedup();
        for (name, value) in touched {
            let Some(values) = self.postings.get_mut(name) else {
                continue;
            };
            if let Some(list) = values.get_mut(value) {
                list.retain(|id| !is_dead(id));
                if list.is_empty() {
                    values.remove(value);
                } else if list.capacity() > 2 * list.len() + 4 {
                    list.shrink_to_fit();
                }
            }
            if values.is_empty() {
                self.postings.remove(name);
            }
        }
    }

    /// Label names in use, sorted.
    pub(crate) fn label_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.postings.keys().cloned().collect();
        names.sort();
        names
    }

    /// Values of `name` in use, sorted.
    pub(crate) fn label_values(&self, name: &str) -> Vec<String> {
        self.postings
            .get(name)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Approximate heap bytes: posting lists, keys, and the map nodes around them.
    pub(crate) fn heap_bytes(&self) -> usize {
        // A B-tree entry costs its key and value plus about a third of node overhead
        // (nodes hold up to 11 entries and are often partly empty); a hash-map entry costs
        // its slot plus one control byte.
        const BTREE_ENTRY: usize = (size_of::<String>() + size_of::<Vec<SeriesId>>()) * 4 / 3;
        let mut bytes = self.all.capacity() * size_of::<SeriesId>();
        bytes += self.postings.capacity()
            * (size_of::<String>() + size_of::<BTreeMap<String, Vec<SeriesId>>>() + 1);
        for (name, values) in &self.postings {
            bytes += name.capacity();
            for (value, list) in values {
                bytes += BTREE_ENTRY + value.capacity() + list.capacity() * size_of::<SeriesId>();
            }
        }
        bytes
    }

    /// The ids of the series matching every matcher, sorted.
    pub(crate) fn select(&self, matchers: &[Prepared]) -> Vec<SeriesId> {
        select(self, matchers)
    }
}

impl Postings for Index {
    fn all_ids(&self) -> Cow<'_, [SeriesId]> {
        Cow::Borrowed(&self.all)
    }

    fn ids(&self, name: &str, value: &str) -> Cow<'_, [SeriesId]> {
        match self.postings.get(name).and_then(|vals| vals.get(value)) {
            Some(list) => Cow::Borrowed(list.as_slice()),
            None => Cow::Borrowed(&[]),
        }
    }

    fn ids_where(&self, name: &str, keep: &dyn Fn(&str) -> bool) -> Cow<'_, [SeriesId]> {
        let Some(vals) = self.postings.get(name) else {
            return Cow::Borrowed(&[]);
        };
        union(
            vals.iter()
                .filter(|(v, _)| keep(v))
                .map(|(_, l)| l.as_slice()),
        )
    }

    fn ids_prefixed(&self, name: &str, prefix: &str) -> Cow<'_, [SeriesId]> {
        let Some(vals) = self.postings.get(name) else {
            return Cow::Borrowed(&[]);
        };
        union(
            vals.range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(v, _)| v.starts_with(prefix))
            .map(|(_, l)| l.as_slice()),
        )
    }

    fn ids_in(&self, name: &str, set: &[String]) -> Cow<'_, [SeriesId]> {
        let Some(vals) = self.postings.get(name) else {
            return Cow::Borrowed(&[]);
        };
        union(set.iter().filter_map(|v| vals.get(v)).map(|l| l.as_slice()))
    }
}

/// Where [`select`] finds its postings: the head's [`Index`], or a block's index file.
/// Every list is sorted by id.
pub(crate) trait Postings {
    /// Every series.
    fn all_ids(&self) -> Cow<'_, [SeriesId]>;
    /// The series whose label `name` is `value` (never empty).
    fn ids(&self, name: &str, value: &str) -> Cow<'_, [SeriesId]>;
    /// The series having label `name` with a value that `keep` accepts.
    fn ids_where(&self, name: &str, keep: &dyn Fn(&str) -> bool) -> Cow<'_, [SeriesId]>;
    /// The series having label `name` with a value that starts with `prefix`.
    fn ids_prefixed(&self, name: &str, prefix: &str) -> Cow<'_, [SeriesId]> {
        self.ids_where(name, &|v| v.starts_with(prefix))
    }
    /// The series having label `name` with one of the values of `set` (sorted, non-empty).
    fn ids_in(&self, name: &str, set: &[String]) -> Cow<'_, [SeriesId]>;
}

/// The ids of the series of `src` matching every matcher, sorted.
pub(crate) fn select(src: &impl Postings, matchers: &[Prepared]) -> Vec<SeriesId> {
    let mut pos: Vec<Cow<'_, [SeriesId]>> = Vec::new();
    let mut neg: Vec<Cow<'_, [SeriesId]>> = Vec::new();
    for m in matchers {
        match eval(src, m) {
            None => {}
            Some(Sel::Pos(p)) => {
                if p.is_empty() {
                    return Vec::new();
                }
                pos.push(p)
            }
            Some(Sel::Neg(n)) if !n.is_empty() => neg.push(n),
            Some(Sel::Neg(_)) => {}
        }
    }
    pos.sort_by_key(|p| p.len());
    let mut iter = pos.into_iter();
    let mut out: Vec<SeriesId> = match iter.next() {
        Some(first) => first.into_owned(),
        None => src.all_ids().into_owned(),
    };
    for p in iter {
        out = intersect(&out, &p);
        if out.is_empty() {
            return out;
        }
    }
    for n in &neg {
        out = subtract(&out, n);
    }
    out
}

/// One matcher as a set; `None` when it selects every series.
fn eval<'a>(src: &'a impl Postings, m: &Prepared) -> Option<Sel<'a>> {
    let name = m.name.as_str();
    let any = || src.ids_where(name, &|_| true);
    Some(match &m.kind {
        Kind::Eq(v) if v.is_empty() => Sel::Neg(any()),
        Kind::Eq(v) => Sel::Pos(src.ids(name, v)),
        Kind::Ne(v) if v.is_empty() => Sel::Pos(any()),
        Kind::Ne(v) => Sel::Neg(src.ids(name, v)),
        Kind::Re {
            re,
            negate,
            matches_empty,
            shape,
        } => {
            // The values (non-empty, as stored) the regex itself matches.
            let matched = || match shape {
                Shape::Any | Shape::NonEmpty => any(),
                Shape::Set(set) if set.len() == 1 => src.ids(name, &set[0]),
                Shape::Set(set) if set.is_empty() => Cow::Borrowed(&[][..]),
                Shape::Set(set) => src.ids_in(name, set),
                Shape::Prefix(p) => src.ids_prefixed(name, p),
                Shape::General => src.ids_where(name, &|v| re.is_match(v)),
            };
            let rejected = || src.ids_where(name, &|v| !re.is_match(v));
            match (negate, matches_empty) {
                // `=~` not matching "": exactly the matched values.
                (false, false) => Sel::Pos(matched()),
                // `=~` matching "": absent labels qualify too; reject the values that
                // fail the regex.
                (false, true) => match shape {
                    Shape::Any => return None,
                    _ => Sel::Neg(rejected()),
                },
                // `!~` whose regex does not match "": reject the matched values.
                (true, false) => Sel::Neg(matched()),
                // `!~` whose regex matches "": absent labels fail; keep the values the
                // regex rejects.
                (true, true) => match shape {
                    Shape::Any => Sel::Pos(Cow::Borrowed(&[])),
                    _ => Sel::Pos(rejected()),
                },
            }
        }
    })
}

/// Sorted, deduplicated union of sorted lists.
fn union<'a>(lists: impl Iterator<Item = &'a [SeriesId]>) -> Cow<'a, [SeriesId]> {
    let lists: Vec<&[SeriesId]> = lists.filter(|l| !l.is_empty()).collect();
    match lists.len() {
        0 => Cow::Borrowed(&[]),
        1 => Cow::Borrowed(lists[0]),
        _ => {
            let mut out: Vec<SeriesId> = Vec::with_capacity(lists.iter().map(|l| l.len()).sum());
            for l in lists {
                out.extend_from_slice(l);
            }
            out.sort_unstable();
            out.dedup();
            Cow::Owned(out)
        }
    }
}

/// Sorted intersection; binary search in the longer list when the other is much shorter.
fn intersect(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if small.len() * 16 < large.len() {
        return small
            .iter()
            .copied()
            .filter(|id| large.binary_search(id).is_ok())
            .collect();
    }
    let mut out = Vec::with_capacity(small.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Sorted difference `a \ b`.
fn subtract(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    if b.len() * 16 < a.len() {
        return a
            .iter()
            .copied()
            .filter(|id| b.binary_search(id).is_err())
            .collect();
    }
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &id in a {
        while j < b.len() && b[j] < id {
            j += 1;
        }
        if j < b.len() && b[j] == id {
            continue;
        }
        out.push(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posting_lists_keep_a_quarter_of_spare_room_at_most() {
        let mut index = Index::default();
        for id in 0..100_000 {
            let id_label = (id % 1000).to_string();
            let l = Labels::new([("job", "j"), ("id", id_label.as_str())]);
            index.add(id, &l);
        }
        let room = |list: &Vec<SeriesId>| list.capacity() <= list.len() + list.len() / 4 + 4;
        assert!(room(&index.all), "{}", index.all.capacity());
        for values in index.postings.values() {
            for list in values.values() {
                assert!(room(list), "{} of {}", list.capacity(), list.len());
            }
        }
    }

    #[test]
    fn set_operations() {
        assert_eq!(intersect(&[1, 3, 5, 7], &[3, 4, 5]), vec![3, 5]);
        let big: Vec<SeriesId> = (0..100).collect();
        assert_eq!(intersect(&[5, 200], &big), vec![5]);
        assert_eq!(subtract(&[1, 2, 3, 4], &[2, 4, 9]), vec![1, 3]);
        assert_eq!(subtract(&big, &[0, 99]).len(), 98);
        assert_eq!(
            &*union([&[1 as SeriesId, 4][..], &[2, 4, 6][..]].into_iter()),
            &[1, 2, 4, 6]
        );
    }

    #[test]
    fn regex_shapes() {
        assert!(matches!(shape_of(".*"), Shape::Any));
        assert!(matches!(shape_of("a|b|a"), Shape::Set(s) if s == ["a", "b"]));
        assert!(matches!(shape_of("a|"), Shape::Set(s) if s == ["a"]));
        assert!(matches!(shape_of("foo.*"), Shape::Prefix(p) if p == "foo"));
        assert!(matches!(shape_of("fo+"), Shape::General));
        assert!(matches!(shape_of("a\\.b|c"), Shape::General));
    }
}
