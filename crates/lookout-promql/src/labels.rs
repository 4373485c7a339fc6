//! Label sets: the identity of a series.

use std::fmt;
use std::sync::Arc;

/// The reserved label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A set of labels, sorted by name, without empty values (an empty value means "absent").
/// Cloning is cheap (the pairs are shared and copied on write), which matters because
/// query evaluation hands the same label sets around at every step.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Arc<Vec<(String, String)>>);

impl Labels {
    /// Builds a label set from pairs in any order; empty values are dropped and for a
    /// repeated name the last value wins.
    pub fn new<I, N, V>(pairs: I) -> Labels
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<(String, String)> = Vec::new();
        for (n, val) in pairs {
            let (n, val) = (n.into(), val.into());
            match v.iter_mut().find(|(k, _)| *k == n) {
                Some(slot) => slot.1 = val,
                None => v.push((n, val)),
            }
        }
        v.retain(|(_, val)| !val.is_empty());
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Labels(Arc::new(v))
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// The metric name (`__name__`), if set.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Sets `name` to `value` (removes it when `value` is empty).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                Arc::make_mut(&mut self.0).remove(i);
            }
            Ok(i) => {
                if self.0[i].1 != value {
                    Arc::make_mut(&mut self.0)[i].1 = value.to_string();
                }
            }
            Err(_) if value.is_empty() => {}
            Err(i) => Arc::make_mut(&mut self.0).insert(i, (name.to_string(), value.to_string())),
        }
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) {
        self.set(name, "");
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An identity for this label set's shared storage: clones share it, equal sets built
    /// separately do not. Only meaningful while the value (or a clone) is alive.
    pub fn ptr_id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Keeps only the labels for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        if self.0.iter().all(|(k, v)| keep(k, v)) {
            return;
        }
        if let Some(pairs) = Arc::get_mut(&mut self.0) {
            pairs.retain(|(k, v)| keep(k, v));
            return;
        }
        // Shared: copy only the pairs that stay.
        let kept: Vec<(String, String)> =
            self.0.iter().filter(|(k, v)| keep(k, v)).cloned().collect();
        self.0 = Arc::new(kept);
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
    fn set_and_remove_keep_order() {
        let mut l = Labels::new([("__name__", "up"), ("job", "x")]);
        l.set("instance", "h:1");
        l.remove("job");
        assert_eq!(l.to_string(), "up{instance=\"h:1\"}");
    }
}
