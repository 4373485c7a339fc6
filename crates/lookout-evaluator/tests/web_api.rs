//! The web API on loopback: Prometheus's JSON shapes for queries, series, labels, rules and
//! alerts; validation errors; `/metrics`; reload and readiness.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use lookout_evaluator::alert::AlertState;
use lookout_evaluator::rules::status::{
    AlertSnapshot, AlertingRuleSnapshot, GroupSnapshot, RuleCommon, RuleHealth, RuleSnapshot,
    RulesStatus,
};
use lookout_evaluator::web::{self, ReloadFn, WebState, shared_registry};
use lookout_promql::Labels;
use lookout_promql::storage::{Storage, StorageOptions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

struct FakeRules;

impl RulesStatus for FakeRules {
    fn groups(&self) -> Vec<GroupSnapshot> {
        let common = |name: &str, query: &str| RuleCommon {
            name: name.into(),
            query: query.into(),
            labels: Labels::new([("severity", "critical")]),
            health: RuleHealth::Ok,
            last_error: None,
            evaluation_duration: Duration::from_millis(2),
            last_evaluation: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        };
        vec![GroupSnapshot {
            name: "availability".into(),
            file: "rules/availability.yml".into(),
            interval: Duration::from_secs(15),
            query_offset: Duration::ZERO,
            limit: 0,
            rules: vec![
                RuleSnapshot::Alerting(AlertingRuleSnapshot {
                    common: common("ServerDown", "up == 0"),
                    hold_duration: Duration::from_secs(60),
                    keep_firing_for: Duration::ZERO,
                    annotations: BTreeMap::from([(
                        "summary".to_string(),
                        "{{ $labels.instance }} down".to_string(),
                    )]),
                    state: AlertState::Firing,
                    alerts: vec![AlertSnapshot {
                        labels: Labels::new([
                            ("alertname", "ServerDown"),
                            ("instance", "a:1"),
                            ("severity", "critical"),
                        ]),
                        annotations: BTreeMap::from([(
                            "summary".to_string(),
                            "a:1 down".to_string(),
                        )]),
                        state: AlertState::Firing,
                        active_at: UNIX_EPOCH + Duration::from_secs(1_699_999_000),
                        keep_firing_since: None,
                        value: 0.0,
                        histogram: None,
                    }],
                }),
                RuleSnapshot::Recording(common("job:up:sum", "sum by (job) (up)")),
            ],
            evaluation_duration: Duration::from_millis(3),
            last_evaluation: None,
        }]
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
    state: WebState,
}

impl Server {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let body = r.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let body = r.bytes().await.expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// The HTML of page `path`, which must answer 200.
    async fn page(&self, path: &str) -> String {
        let (code, html) = self.text(reqwest::Method::GET, path).await;
        assert_eq!(code, 200, "{path}: {html}");
        html
    }

    async fn text(&self, method: reqwest::Method, path: &str) -> (u16, String) {
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.expect("body"))
    }
}

async fn start(reload: Option<ReloadFn>) -> Server {
    let storage = Arc::new(Storage::new(StorageOptions::default()));
    // up for two targets every 15 s from t=1000 s to t=1300 s.
    for i in 0..=20 {
        let t = 1_000_000 + i * 15_000;
        for (inst, v) in [("a:1", 0.0), ("b:1", 1.0)] {
            storage
                .append(
                    &Labels::new([("__name__", "up"), ("job", "node"), ("instance", inst)]),
                    t,
                    v,
                )
                .expect("append");
        }
    }
    let mut registry = Registry::default();
    let counter = Counter::<u64>::default();
    counter.inc_by(3);
    registry.register("lookout_test_events", "Test events.", counter);
    let mut state = WebState::new(shared_registry(registry));
    state.storage = Some(storage);
    state.rules = Some(Arc::new(FakeRules));
    state.reload = reload;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let router = web::router(state.clone());
    tokio::spawn(async move {
        let _ = web::serve(listener, router, std::future::pending()).await;
    });
    Server {
        base,
        client: reqwest::Client::new(),
        state,
    }
}

#[tokio::test]
async fn query_endpoints_speak_prometheus_json() {
    let s = start(None).await;

    let (code, v) = s.get("/api/v1/query?query=up%20%3D%3D%200&time=1100").await;
    assert_eq!(code, 200);
    assert_eq!(
        v,
        json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "instance": "a:1", "job": "node"}, "value": [1100, "0"]}
        ]}})
    );
    let (_, v) = s
        .post_form(
            "/api/v1/query",
            &[("query", "1 + 1"), ("time", "2015-07-01T20:10:51.781Z")],
        )
        .await;
    assert_eq!(
        v["data"],
        json!({"resultType": "scalar", "result": [1435781451.781, "2"]})
    );
    let (code, v) = s.get("/api/v1/query?query=sum(&time=1100").await;
    assert_eq!(code, 400);
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    let (code, v) = s.get("/api/v1/query?query=up&time=soon").await;
    assert_eq!(code, 400);
    assert!(
        v["error"].as_str().unwrap_or("").contains("\"time\""),
        "{v}"
    );

    let (code, v) = s
        .get("/api/v1/query_range?query=sum(up)&start=1000&end=1060&step=30s")
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        v["data"],
        json!({"resultType": "matrix", "result": [
            {"metric": {}, "values": [[1000, "1"], [1030, "1"], [1060, "1"]]}
        ]})
    );
    for (q, what) in [
        (
            "start=1060&end=1000&step=15",
            "end timestamp must not be before start time",
        ),
        ("start=1000&end=1060&step=0", "zero or negative"),
        ("start=1000&end=1060&step=x", "\"step\""),
        ("start=0&end=100000&step=1", "11,000 points"),
        ("end=1060&step=15", "\"start\""),
    ] {
        let (code, v) = s.get(&format!("/api/v1/query_range?query=up&{q}")).await;
        assert_eq!(code, 400, "{q}");
        assert!(v["error"].as_str().unwrap_or("").contains(what), "{q}: {v}");
    }

    let (_, v) = s
        .get("/api/v1/series?match[]=up%7Binstance%3D%22b%3A1%22%7D")
        .await;
    assert_eq!(
        v["data"],
        json!([{"__name__": "up", "instance": "b:1", "job": "node"}])
    );
    let (code, _) = s.get("/api/v1/series").await;
    assert_eq!(code, 400);
    let (_, v) = s.get("/api/v1/labels").await;
    assert_eq!(v["data"], json!(["__name__", "instance", "job"]));
    let (_, v) = s.get("/api/v1/label/instance/values").await;
    assert_eq!(v["data"], json!(["a:1", "b:1"]));
    let (_, v) = s.get("/api/v1/status/buildinfo").await;
    assert_eq!(v["status"], "success");
    let html = s.page("/graph?g0.expr=up%20%3D%3D%200&g0.tab=1").await;
    assert!(html.contains("up == 0"), "{html}");
    let (_, v) = s.get("/api/v1/metadata").await;
    assert_eq!(v, json!({"status": "success", "data": {}}));
    let (_, v) = s
        .get("/api/v1/query_exemplars?query=up&start=1000&end=1100")
        .await;
    assert_eq!(v, json!({"status": "success", "data": []}));
}

#[tokio::test]
async fn rules_alerts_metrics_and_lifecycle() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let reload: ReloadFn = Arc::new(move || {
        let n = c.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if n == 0 {
                Ok(())
            } else {
                Err("rules/bad.yml:3:5: unknown field".to_string())
            }
        })
    });
    let s = start(Some(reload)).await;

    let (_, v) = s.get("/api/v1/rules").await;
    let g = &v["data"]["groups"][0];
    assert_eq!(g["name"], "availability");
    assert_eq!(g["file"], "rules/availability.yml");
    assert_eq!(g["interval"], 15.0);
    assert_eq!(g["lastEvaluation"], "0001-01-01T00:00:00Z");
    let r = &g["rules"][0];
    assert_eq!(r["type"], "alerting");
    assert_eq!(r["state"], "firing");
    assert_eq!(r["duration"], 60.0);
    assert_eq!(r["health"], "ok");
    assert_eq!(r["lastEvaluation"], "2023-11-14T22:13:20Z");
    assert_eq!(r["alerts"][0]["value"], "0e+00");
    assert_eq!(r["alerts"][0]["activeAt"], "2023-11-14T21:56:40Z");
    assert_eq!(g["rules"][1]["type"], "recording");
    let (_, v) = s.get("/api/v1/rules?type=record").await;
    assert_eq!(
        v["data"]["groups"][0]["rules"].as_array().map(Vec::len),
        Some(1)
    );
    let (_, v) = s.get("/api/v1/rules?exclude_alerts=true").await;
    assert!(v["data"]["groups"][0]["rules"][0].get("alerts").is_none());
    let (code, _) = s.get("/api/v1/rules?type=bogus").await;
    assert_eq!(code, 400);

    let (_, v) = s.get("/api/v1/alerts").await;
    assert_eq!(
        v["data"]["alerts"],
        json!([{
            "labels": {"alertname": "ServerDown", "instance": "a:1", "severity": "critical"},
            "annotations": {"summary": "a:1 down"},
            "state": "firing",
            "activeAt": "2023-11-14T21:56:40Z",
            "value": "0e+00"
        }])
    );

    let (code, text) = s.text(reqwest::Method::GET, "/metrics").await;
    assert_eq!(code, 200);
    assert!(text.contains("lookout_test_events_total 3"), "{text}");

    let (code, _) = s.text(reqwest::Method::GET, "/-/ready").await;
    assert_eq!(code, 503);
    s.state.ready.store(true, Ordering::Release);
    let (code, _) = s.text(reqwest::Method::GET, "/-/ready").await;
    assert_eq!(code, 200);
    let (code, _) = s.text(reqwest::Method::GET, "/-/healthy").await;
    assert_eq!(code, 200);

    let (code, _) = s.text(reqwest::Method::POST, "/-/reload").await;
    assert_eq!(code, 200);
    let (code, text) = s.text(reqwest::Method::POST, "/-/reload").await;
    assert_eq!(code, 500);
    assert!(text.contains("rules/bad.yml:3:5"), "{text}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let (code, _) = s.text(reqwest::Method::GET, "/-/reload").await;
    assert_eq!(code, 405);
}

#[tokio::test]
async fn api_answers_are_compressed_when_the_client_asks_as_prometheus_does() {
    use std::io::Read;
    let s = start(None).await;
    let path = "/api/v1/query_range?query=up&start=1000&end=1060&step=30";
    let (_, plain) = s.get(path).await;
    for (accept, encoding) in [("gzip", "gzip"), ("br, deflate", "deflate")] {
        let r = s
            .client
            .get(format!("{}{path}", s.base))
            .header("Accept-Encoding", accept)
            .send()
            .await
            .expect("request");
        assert_eq!(r.headers()["content-encoding"], encoding);
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        let body = r.bytes().await.expect("body");
        let mut out = Vec::new();
        if encoding == "gzip" {
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out)
        } else {
            flate2::read::ZlibDecoder::new(&body[..]).read_to_end(&mut out)
        }
        .expect("decodes");
        assert_eq!(serde_json::from_slice::<Value>(&out).expect("JSON"), plain);
    }
    // Not asked (or only with parameters, which Prometheus does not read): not compressed.
    for accept in [None, Some("gzip;q=1"), Some("br")] {
        let mut req = s.client.get(format!("{}{path}", s.base));
        if let Some(a) = accept {
            req = req.header("Accept-Encoding", a);
        }
        let r = req.send().await.expect("request");
        assert!(r.headers().get("content-encoding").is_none(), "{accept:?}");
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        let body = r.bytes().await.expect("body");
        assert_eq!(serde_json::from_slice::<Value>(&body).expect("JSON"), plain);
    }
    // Errors too, as in Prometheus; other pages are not.
    let r = s
        .client
        .get(format!("{}/api/v1/query?query=sum(", s.base))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let r = s
        .client
        .get(format!("{}/metrics", s.base))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert!(r.headers().get("content-encoding").is_none());
}

/// A native histogram on `/graph`: plotted by its count (the legend says so) and shown in
/// the instant table by its count, sum and buckets; and in the query API's JSON.
#[tokio::test]
async fn native_histograms_on_the_graph_page_and_in_the_api() {
    let s = start(None).await;
    let storage = s.state.storage.clone().expect("embedded storage");
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let labels = Labels::new([("__name__", "lookout_h"), ("job", "<b>x</b>")]);
    for i in 0..4 {
        let k = f64::from(i);
        let text = format!(
            "schema:0 count:{} sum:{} z_bucket:1 z_bucket_w:0.001 buckets:[{} 0 1] n_buckets:[2]",
            4.0 + k,
            k - 0.5,
            k + 1.0
        );
        let h = lookout_promql::histogram::notation::parse(&text)
            .expect("notation")
            .h;
        storage
            .append_histogram(&labels, now - 45_000 + i64::from(i) * 15_000, Arc::new(h))
            .expect("append");
    }
    let html = s.page("/graph?g0.expr=lookout_h&g0.range_input=5m").await;
    assert!(html.contains("count 7 · sum 2.5"), "{html}");
    assert!(html.contains("<table class=\"buckets\">"), "{html}");
    for row in [
        "<tr><td>[-1, -0.5)</td><td class=\"num\">2</td></tr>",
        "<tr><td>[-0.001, 0.001]</td><td class=\"num\">1</td></tr>",
        "<tr><td>(0.5, 1]</td><td class=\"num\">4</td></tr>",
        "<tr><td>(2, 4]</td><td class=\"num\">1</td></tr>",
    ] {
        assert!(html.contains(row), "{row} in {html}");
    }
    assert!(
        html.contains("(native histogram: its count is plotted)"),
        "{html}"
    );
    assert!(html.contains("<path"), "a line is drawn: {html}");
    assert!(!html.contains("<b>x</b>"), "labels are escaped");
    let (_, v) = s.get("/api/v1/query?query=lookout_h").await;
    assert_eq!(v["data"]["result"][0]["histogram"][1]["count"], "7");
    assert_eq!(
        v["data"]["result"][0]["histogram"][1]["buckets"][0],
        json!([1, "-1", "-0.5", "2"])
    );
}
