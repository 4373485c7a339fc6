//! Helpers shared by the interop tests against Prometheus's tools.
#![allow(dead_code)]

pub mod nh_exposition;
mod peer;
pub use peer::have;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use lookout_promql::labels::Labels;
use lookout_promql::storage::{Queryable, Storage};
use promql_parser::label::{MatchOp, Matcher};

/// Series (Prometheus notation) → samples (t, value bits) in `st`.
pub fn lookout_dump(st: &Storage) -> BTreeMap<String, Vec<(i64, u64)>> {
    let m = Matcher::new(
        MatchOp::Re(regex::Regex::new("^(?s:.+)$").unwrap()),
        "__name__",
        ".+",
    );
    st.select(&[m], i64::MIN, i64::MAX)
        .into_iter()
        .map(|s| {
            let v = s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect();
            (s.labels.to_string(), v)
        })
        .collect()
}

/// `promtool tsdb dump DIR`, parsed: lines `{labels} value timestamp`.
pub fn promtool_dump(dir: &Path) -> BTreeMap<String, Vec<(i64, u64)>> {
    let out = Command::new("promtool")
        .args(["tsdb", "dump"])
        .arg(dir)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool tsdb dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut series: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let close = line.rfind('}').expect("labels");
        let (labels, rest) = line.split_at(close + 1);
        let mut f = rest.split_whitespace();
        let v: f64 = f.next().unwrap().parse().unwrap();
        let t: i64 = f.next().unwrap().parse().unwrap();
        series
            .entry(canonical(labels))
            .or_default()
            .push((t, v.to_bits()));
    }
    series
}

/// `{a="x", b="y"}` as Lookout prints labels (`name{…}`).
pub fn canonical(braced: &str) -> String {
    let inner = braced.trim_start_matches('{').trim_end_matches('}');
    let mut pairs = Vec::new();
    for part in split_pairs(inner) {
        let (n, v) = part.split_once('=').unwrap();
        let v: String = serde_json::from_str(v).unwrap();
        pairs.push((n.trim().to_string(), v));
    }
    Labels::new(pairs).to_string()
}

/// Splits `a="x", b="y,z"` at the commas between pairs.
fn split_pairs(s: &str) -> Vec<&str> {
    let (mut out, mut start, mut in_str, mut esc) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            ',' if !in_str => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s[start..].trim().is_empty() {
        out.push(s[start..].trim());
    }
    out
}

/// Equal dumps, or a short account of the first difference.
/// promtool prints every NaN as `NaN`, so NaN payloads (the staleness marker included)
/// are compared as one NaN.
pub fn assert_same(
    got: &BTreeMap<String, Vec<(i64, u64)>>,
    want: &BTreeMap<String, Vec<(i64, u64)>>,
) {
    let norm = |v: &Vec<(i64, u64)>| -> Vec<(i64, u64)> {
        v.iter()
            .map(|&(t, b)| {
                (
                    t,
                    if f64::from_bits(b).is_nan() {
                        f64::NAN.to_bits()
                    } else {
                        b
                    },
                )
            })
            .collect()
    };
    for (k, v) in want {
        assert_eq!(got.get(k).map(norm), Some(norm(v)), "series {k}");
    }
    assert_eq!(got.len(), want.len(), "extra series");
}

pub fn unsafe_sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The body of `GET path` from `127.0.0.1:port` (HTTP/1.0, so never chunked); `None`
/// when the server does not answer or answers with an error status.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_call(port, "GET", path, "200")
}

/// The body of `POST path` (no body) when the answer's status is `status`.
pub fn http_post(port: u16, path: &str, status: &str) -> Option<String> {
    http_call(port, "POST", path, status)
}

fn http_call(port: u16, method: &str, path: &str, status: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.split_whitespace().nth(1).filter(|c| *c == status)?;
    Some(body.to_string())
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
