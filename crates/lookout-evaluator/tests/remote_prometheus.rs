//! The remote datasource against Debian's real `prometheus` scraping an axum target on
//! loopback, and against an axum stand-in for authentication and error shapes.

mod scrape_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use lookout_evaluator::datasource::{Datasource, DatasourceError};
use lookout_evaluator::remote::{QueryMethod, RemoteConfig, RemoteDatasource};
use lookout_evaluator::scrape_config::HttpClientConfig;
use scrape_support::{eventually, serve_loopback as serve, start_prometheus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_a_real_prometheus() {
    let target = serve(Router::new().route(
        "/metrics",
        get(|| async { "lookout_remote_test{kind=\"a\"} 42\nlookout_remote_test{kind=\"b\"} 7\n" }),
    ))
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_prom, port) = start_prometheus(dir.path(), std::slice::from_ref(&target)).await;

    for method in [QueryMethod::Post, QueryMethod::Get] {
        let mut cfg = RemoteConfig::new(format!("http://127.0.0.1:{port}/"));
        cfg.method = method;
        cfg.timeout = Duration::from_secs(10);
        let ds = RemoteDatasource::new(cfg).expect("datasource");

        let samples = eventually(Duration::from_secs(30), || {
            let ds = &ds;
            async move {
                let s = ds
                    .query("sort(lookout_remote_test)", SystemTime::now())
                    .await
                    .ok()?;
                (s.len() == 2).then_some(s)
            }
        })
        .await
        .expect("Prometheus scraped the target");
        assert_eq!(samples[0].value, 7.0);
        assert_eq!(samples[0].labels.get("kind"), Some("b"));
        assert_eq!(samples[0].labels.get("job"), Some("target"));
        assert_eq!(samples[0].labels.get("instance"), Some(target.as_str()));
        assert_eq!(
            samples[1].labels.get("__name__"),
            Some("lookout_remote_test")
        );

        let scalar = ds.query("1 + 1", SystemTime::now()).await.expect("scalar");
        assert_eq!(scalar.len(), 1);
        assert!(scalar[0].labels.is_empty());
        assert_eq!(scalar[0].value, 2.0);

        match ds.query("sum(", SystemTime::now()).await {
            Err(DatasourceError::Query { message, .. }) => {
                assert!(message.contains("parse error"), "{message}")
            }
            other => panic!("expected a query error, got {other:?}"),
        }
        match ds.query("up[1m]", SystemTime::now()).await {
            Err(DatasourceError::UnexpectedResult { kind, .. }) => assert_eq!(kind, "matrix"),
            other => panic!("expected a matrix error, got {other:?}"),
        }
        match ds.query("\"text\"", SystemTime::now()).await {
            Err(DatasourceError::UnexpectedResult { kind, .. }) => assert_eq!(kind, "string"),
            other => panic!("expected a string error, got {other:?}"),
        }

        let last = ds
            .last_samples(
                "lookout_remote_test{kind=\"a\"}",
                Duration::from_secs(60),
                SystemTime::now(),
            )
            .await
            .expect("last samples");
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].value, 42.0);
        let age = SystemTime::now()
            .duration_since(last[0].timestamp)
            .unwrap_or_default();
        assert!(
            age < Duration::from_secs(60),
            "timestamp within the look-back"
        );
        assert!(ds.append(&[], SystemTime::now()).is_ok());
    }
}

type Seen = Arc<Mutex<Vec<Option<String>>>>;

#[tokio::test]
async fn authentication_and_server_errors() {
    let seen: Seen = Arc::default();
    async fn query(State(seen): State<Seen>, headers: HeaderMap) -> (StatusCode, String) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        seen.lock().expect("lock").push(auth.clone());
        match auth.as_deref() {
            Some("Basic dXNlcjpwYXNz") | Some("Bearer s3cret") => (
                StatusCode::OK,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"x"},"value":[1700000000.5,"+Inf"]}]}}"#.into(),
            ),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"error","errorType":"unavailable","error":"too many queries"}"#.into(),
            ),
        }
    }
    let addr = serve(
        Router::new()
            .route("/prom/api/v1/query", post(query))
            .with_state(seen.clone()),
    )
    .await;

    let mut cfg = RemoteConfig::new(format!("http://{addr}/prom"));
    cfg.http =
        serde_yaml_ng::from_str::<HttpClientConfig>("basic_auth: {username: user, password: pass}")
            .expect("auth config");
    let ds = RemoteDatasource::new(cfg.clone()).expect("datasource");
    let s = ds
        .query("up", SystemTime::now())
        .await
        .expect("query with basic auth");
    assert_eq!(s[0].value, f64::INFINITY);
    assert_eq!(s[0].labels.get("job"), Some("x"));

    cfg.http =
        serde_yaml_ng::from_str::<HttpClientConfig>("bearer_token: s3cret").expect("auth config");
    let ds = RemoteDatasource::new(cfg.clone()).expect("datasource");
    assert!(ds.query("up", SystemTime::now()).await.is_ok());

    cfg.http = HttpClientConfig::default();
    let ds = RemoteDatasource::new(cfg).expect("datasource");
    match ds.query("up", SystemTime::now()).await {
        Err(DatasourceError::Unavailable(m)) => assert!(m.contains("too many queries"), "{m}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![
            Some("Basic dXNlcjpwYXNz".to_string()),
            Some("Bearer s3cret".to_string()),
            None
        ]
    );

    let dead = RemoteDatasource::new(RemoteConfig::new(format!(
        "http://127.0.0.1:{}",
        scrape_support::free_port()
    )))
    .expect("datasource");
    assert!(matches!(
        dead.query("up", SystemTime::now()).await,
        Err(DatasourceError::Unavailable(_))
    ));
}
