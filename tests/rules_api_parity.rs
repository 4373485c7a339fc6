//! `/api/v1/rules` and `/api/v1/alerts` side by side with Debian's Prometheus 2.42: both load
//! the same rule file (no scraping: the rules read `vector()`), evaluate it every second,
//! and their answers must have the same shape — the same objects with the same keys in the
//! same order, the same JSON types, the same values — once the fields that depend on when
//! each program evaluated (`evaluationTime`, `lastEvaluation`, `activeAt`) and the rule
//! file's path are set aside. The `type=` filter is compared too (2.42 keeps the groups it
//! empties, later releases and Lookout do not); the newer filters `rule_name[]`,
//! `rule_group[]`, `file[]` and `exclude_alerts` are not in 2.42.

mod common;

use std::fmt;
use std::time::Duration;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use common::{client, eventually, free_port, start_evaluator, start_prometheus, write_file};

/// A firing alert with annotations and a `for`, a pending one, an inactive one, a recording
/// rule with labels, in two groups.
const RULES: &str = r#"groups:
  - name: first
    interval: 1s
    rules:
      - alert: Firing
        expr: vector(2.5) > 1
        labels:
          severity: page
          team: "1.0"
        annotations:
          summary: "value {{ $value }}"
          runbook: "https://example.com/{{ $labels.severity }}"
      - alert: Pending
        expr: vector(1)
        for: 1h
        keep_firing_for: 5m
      - alert: Inactive
        expr: vector(1) < 0
  - name: second
    interval: 1s
    limit: 10
    rules:
      - record: job:example:sum
        expr: sum(vector(3))
        labels:
          kind: recorded
"#;

/// A JSON value that keeps its objects' key order (serde_json's `Value` sorts them).
#[derive(Debug, PartialEq)]
enum Ordered {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ordered, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.to_string()))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.to_string()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.to_string()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered::String(s.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Ordered::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry()? {
                    v.push((k, x));
                }
                Ok(Ordered::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Blanks what depends on the moment of evaluation or on the file's path.
fn normalise(v: &mut Ordered) {
    match v {
        Ordered::Array(items) => items.iter_mut().for_each(normalise),
        Ordered::Object(fields) => {
            for (k, x) in fields.iter_mut() {
                match k.as_str() {
                    "evaluationTime" | "lastEvaluation" | "activeAt" | "file" => {
                        *x = Ordered::String("<varies>".into())
                    }
                    _ => normalise(x),
                }
            }
        }
        _ => {}
    }
}

/// Removes the groups whose `rules` list is empty from a rules API answer.
fn drop_empty_groups(v: &mut Ordered) {
    let Some(groups) = field(v, "data").and_then(|d| field(d, "groups")) else {
        panic!("no data.groups in {v:?}");
    };
    if let Ordered::Array(list) = groups {
        list.retain_mut(|g| !matches!(field(g, "rules"), Some(Ordered::Array(r)) if r.is_empty()));
    }
}

fn field<'a>(v: &'a mut Ordered, name: &str) -> Option<&'a mut Ordered> {
    match v {
        Ordered::Object(fields) => fields.iter_mut().find(|(k, _)| k == name).map(|(_, x)| x),
        _ => None,
    }
}

async fn get_ordered(url: &str) -> Ordered {
    let body = client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .text()
        .await
        .expect("body");
    let mut v: Ordered = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}"));
    normalise(&mut v);
    v
}

/// Whether both have evaluated every group at least twice (the firing alert is firing).
async fn settled(base: &str) -> bool {
    let Ok(r) = client().get(format!("{base}/api/v1/alerts")).send().await else {
        return false;
    };
    r.text().await.is_ok_and(|t| t.contains("\"firing\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_alerts_apis_answer_as_prometheus_does() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write_file(dir.path(), "api.rules.yml", RULES);
    let (_prometheus, p_port) = start_prometheus(
        dir.path(),
        &format!("global: {{evaluation_interval: 1s}}\nrule_files: ['{rules}']\n"),
    )
    .await;
    write_file(
        dir.path(),
        "evaluator.yml",
        &format!("global: {{evaluation_interval: 1s}}\nrule_files: ['{rules}']\n"),
    );
    let lookout = start_evaluator(dir.path(), free_port(), &[]).await;
    let prometheus = format!("http://127.0.0.1:{p_port}");
    for base in [&prometheus, &lookout.base] {
        eventually(
            "both evaluated",
            100,
            Duration::from_millis(100),
            || async { settled(base).await.then_some(()) },
        )
        .await;
    }
    // A second apart, so the next evaluations cannot change states between the two reads.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for path in ["/api/v1/rules", "/api/v1/alerts"] {
        let want = get_ordered(&format!("{prometheus}{path}")).await;
        let got = get_ordered(&format!("{}{path}", lookout.base)).await;
        assert_eq!(
            got, want,
            "{path}: lookout's answer (left) differs from Prometheus's (right)"
        );
    }
    // With `type=`, Prometheus 2.42 still lists the groups left without rules; later
    // releases, and Lookout, leave them out (README, Differences).
    for path in ["/api/v1/rules?type=alert", "/api/v1/rules?type=record"] {
        let mut want = get_ordered(&format!("{prometheus}{path}")).await;
        drop_empty_groups(&mut want);
        let got = get_ordered(&format!("{}{path}", lookout.base)).await;
        assert_eq!(
            got, want,
            "{path}: lookout's answer (left) differs from Prometheus's (right)"
        );
    }
}
