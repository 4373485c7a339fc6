//! Hostile input: see `tests/hostile.rs`. The `/probe` policy, the web configuration,
//! authentication and the files a configuration names, against the exporter binary.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, Process, free_port, write_file};
use crate::support::Watchdog;

/// Starts the exporter with `config` and extra flags; returns it and its base URL.
async fn exporter(dir: &Path, config: &str, extra: &[String], scheme: &str) -> (Process, String) {
    let port = free_port();
    let file = write_file(dir, "exporter.yml", config);
    let mut args = vec![
        "exporter".to_string(),
        "--config.file".to_string(),
        file,
        "--web.listen-address".to_string(),
        format!("127.0.0.1:{port}"),
    ];
    args.extend_from_slice(extra);
    let process = Process::lookout("exporter", &args, dir);
    (process, format!("{scheme}://127.0.0.1:{port}"))
}

/// A loopback HTTP server on `ip` answering 200 to anything (or a redirect to
/// `redirect`), counting the connections it accepted.
async fn counting_server(ip: &str, redirect: Option<String>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let redirect = redirect.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let answer = match redirect {
                    Some(to) => format!(
                        "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    None => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        .to_string(),
                };
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, hits)
}

fn refused_count(metrics: &str) -> f64 {
    common::sample(
        metrics,
        "lookout_exporter_probe_requests_refused_total",
        &[("reason", "not_allowed")],
    )
    .unwrap_or(0.0)
}

/// Probes each `(module, target)` and expects 403 from the policy.
async fn expect_refused(client: &reqwest::Client, base: &str, cases: &[(&str, String)]) {
    for (module, target) in cases {
        let response = client
            .get(format!("{base}/probe"))
            .query(&[("module", module.to_string()), ("target", target.clone())])
            .send()
            .await
            .expect("probe");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 403, "{module} {target}: {body}");
        assert!(body.contains("probe_policy.allowed_targets"), "{body}");
    }
}

async fn metrics_text(client: &reqwest::Client, base: &str) -> String {
    client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body")
}

#[tokio::test]
async fn the_probe_policy_holds_where_the_probe_connects() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let (outside, outside_hits) = counting_server("127.0.0.2", None).await;
    let (redirect, _) =
        counting_server("127.0.0.1", Some(format!("http://127.0.0.2:{outside}/"))).await;
    let (inside, inside_hits) = counting_server("127.0.0.1", None).await;
    let config = |allowed: &str| {
        format!(
            "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n  tcp:\n    prober: tcp\n    timeout: 5s\nprobe_policy:\n  allowed_targets: [{allowed}]\n"
        )
    };
    let (_process, base) = exporter(
        dir.path(),
        &config("'127.0.0.1/32', '*.allowed.test'"),
        &[],
        "http",
    )
    .await;
    common::wait_ready("lookout exporter", &format!("{base}/-/ready")).await;
    let watchdog = Watchdog::start(&format!("{base}/-/healthy"), None);
    let client = common::client();
    let started = Instant::now();
    let mut cases = vec![
        ("http_2xx", format!("[127.0.0.1]@127.0.0.2:{outside}")),
        (
            "http_2xx",
            format!("[evil.allowed.test]@127.0.0.2:{outside}"),
        ),
        ("http_2xx", format!("127.0.0.1@127.0.0.2:{outside}")),
        ("tcp", format!("[127.0.0.1]@127.0.0.2:{outside}")),
        // Allowed on arrival, redirected outside: refused at the redirect's connect.
        ("http_2xx", format!("http://127.0.0.1:{redirect}/")),
    ];
    expect_refused(&client, &base, &cases).await;
    // Inside the list: still probed.
    let ok = client
        .get(format!("{base}/probe"))
        .query(&[("target", format!("127.0.0.1:{inside}"))])
        .send()
        .await
        .expect("probe")
        .text()
        .await
        .expect("body");
    assert!(ok.contains("probe_success 1"), "{ok}");
    assert_eq!(
        outside_hits.load(Ordering::SeqCst),
        0,
        "127.0.0.2 was reached"
    );
    assert_eq!(inside_hits.load(Ordering::SeqCst), 1);

    // A name resolving outside the list: `localhost` (127.0.0.1) with only 127.0.0.2
    // allowed, named directly (refused on arrival) and behind a redirect from an allowed
    // address (refused where the redirect connects).
    let (to_localhost, _) =
        counting_server("127.0.0.2", Some(format!("http://localhost:{inside}/"))).await;
    write_file(dir.path(), "exporter.yml", &config("'127.0.0.2/32'"));
    let reload = client.post(format!("{base}/-/reload")).send().await;
    assert_eq!(reload.expect("reload").status().as_u16(), 200);
    let named = [
        ("http_2xx", format!("http://127.0.0.2:{to_localhost}/")),
        ("tcp", format!("localhost:{inside}")),
        ("http_2xx", format!("http://localhost:{inside}/")),
    ];
    expect_refused(&client, &base, &named).await;
    cases.extend(named);
    assert_eq!(
        inside_hits.load(Ordering::SeqCst),
        1,
        "localhost was reached"
    );
    let took = started.elapsed();
    let metrics = metrics_text(&client, &base).await;
    assert_eq!(refused_count(&metrics), cases.len() as f64, "{metrics}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    watchdog.finish("probe policy bypasses");
}

fn hash(password: &str, cost: u32) -> String {
    bcrypt::hash(password, cost).expect("bcrypt")
}

/// Rewrites `file` in place (truncate, then write) with `text` until `stop`, counting.
fn rewrite_in_place(file: std::path::PathBuf, text: String, stop: Arc<AtomicBool>) -> usize {
    let mut rewrites = 0;
    while !stop.load(Ordering::Relaxed) {
        let _ = std::fs::write(&file, &text);
        rewrites += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    rewrites
}

/// Sends unauthenticated GETs to `url` until `stop`; returns (requests, 200 answers).
async fn hammer(client: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> (usize, usize) {
    let (mut sent, mut ok) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        sent += 1;
        if let Ok(r) = client.get(&url).send().await {
            ok += usize::from(r.status().is_success());
        }
    }
    (sent, ok)
}

#[tokio::test]
async fn rewriting_the_web_config_in_place_never_lets_a_request_through() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let web = format!("basic_auth_users:\n  alice: '{}'\n", hash("right", 4));
    let web_file = write_file(dir.path(), "web.yml", &web);
    let extra = ["--web.config.file".to_string(), web_file.clone()];
    let (process, base) = exporter(dir.path(), "modules: {}\n", &extra, "http").await;
    common::eventually("exporter up", 100, Duration::from_millis(100), || {
        let url = format!("{base}/-/healthy");
        async move { common::status_of("GET", &url).await.filter(|s| *s == 401) }
    })
    .await;
    let watchdog = Watchdog::start(&format!("{base}/-/healthy"), Some(("alice", "right")));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (file, stop) = (web_file.clone().into(), stop.clone());
        std::thread::spawn(move || rewrite_in_place(file, web, stop))
    };
    let hammers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(hammer(
                common::client(),
                format!("{base}/metrics"),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let rewrites = writer.join().expect("writer");
    let (mut sent, mut ok) = (0, 0);
    for h in hammers {
        let (s, o) = h.await.expect("hammer");
        sent += s;
        ok += o;
    }
    eprintln!("{rewrites} rewrites, {sent} unauthenticated requests, {ok} answered 200");
    assert!(
        rewrites > 100 && sent > 100,
        "{rewrites} rewrites, {sent} requests"
    );
    assert_eq!(
        ok, 0,
        "{ok} of {sent} unauthenticated requests got 200 during {rewrites} rewrites"
    );
    let metrics = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .basic_auth("alice", Some("right"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let failures = common::sample(&metrics, "lookout_web_config_reload_failures_total", &[]);
    assert!(failures.is_some_and(|f| f >= 1.0), "{metrics}");
    watchdog.finish("web config rewrites");
    drop(process);
}

fn self_signed(dir: &Path) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let c = write_file(dir, "cert.pem", &cert.cert.pem());
    let k = write_file(dir, "key.pem", &cert.key_pair.serialize_pem());
    (c, k)
}

#[tokio::test]
async fn with_tls_plain_http_never_answers_while_the_file_is_rewritten() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed(dir.path());
    let web = format!("tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n");
    let web_file = write_file(dir.path(), "web.yml", &web);
    let extra = ["--web.config.file".to_string(), web_file.clone()];
    let (_process, base) = exporter(dir.path(), "modules: {}\n", &extra, "http").await;
    let tls_client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let https = base.replace("http://", "https://");
    common::eventually("exporter up", 100, Duration::from_millis(100), || {
        let req = tls_client.get(format!("{https}/-/healthy")).send();
        async move { req.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (file, stop) = (web_file.clone().into(), stop.clone());
        std::thread::spawn(move || rewrite_in_place(file, web, stop))
    };
    let hammers: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(hammer(
                common::client(),
                format!("{base}/metrics"),
                stop.clone(),
            ))
        })
        .collect();
    // Liveness over TLS during the attack: every answer within a second.
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let asked = Instant::now();
        let r = tls_client.get(format!("{https}/-/healthy")).send().await;
        slowest = slowest.max(asked.elapsed());
        assert!(
            r.is_ok_and(|r| r.status().is_success()),
            "/-/healthy over TLS failed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let rewrites = writer.join().expect("writer");
    let mut ok = 0;
    for h in hammers {
        ok += h.await.expect("hammer").1;
    }
    assert!(rewrites > 100, "{rewrites}");
    assert_eq!(
        ok, 0,
        "plain HTTP answered 200 {ok} times during {rewrites} rewrites"
    );
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
}

/// The median times of `rounds` failed checks for each of `users`, interleaved so that
/// the load of the machine falls on all alike (each password distinct: none is cached).
async fn median_checks(url: &str, users: &[&str], rounds: usize) -> Vec<Duration> {
    let client = common::client();
    let mut times = vec![Vec::new(); users.len()];
    for i in 0..rounds {
        for (user, seen) in users.iter().zip(times.iter_mut()) {
            let asked = Instant::now();
            let r = client
                .get(url)
                .basic_auth(user, Some(format!("wrong-{i}")))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), 401);
            seen.push(asked.elapsed());
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[rounds / 2]
        })
        .collect()
}

#[tokio::test]
async fn password_checks_take_the_same_time_for_every_user_and_a_flood_waits_its_turn() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    // Costs 4 and 7: one check of cost 7 is 8 checks of cost 4.
    let web = format!(
        "basic_auth_users:\n  cheap: '{}'\n  costly: '{}'\n  first: '{}'\n",
        hash("cheap-pw", 4),
        hash("costly-pw", 7),
        hash("first-pw", 4),
    );
    let web_file = write_file(dir.path(), "web.yml", &web);
    let extra = ["--web.config.file".to_string(), web_file];
    let (_process, base) = exporter(dir.path(), "modules: {}\n", &extra, "http").await;
    let healthy = format!("{base}/-/healthy");
    common::eventually("exporter up", 100, Duration::from_millis(100), || {
        let url = healthy.clone();
        async move { common::status_of("GET", &url).await.filter(|s| *s == 401) }
    })
    .await;

    // Timing: unknown users and wrong passwords of users of either cost look alike.
    let metrics = format!("{base}/metrics");
    let medians = median_checks(&metrics, &["nobody", "cheap", "costly"], 9).await;
    eprintln!(
        "median failed check: unknown {:?}, cost-4 user {:?}, cost-7 user {:?}",
        medians[0], medians[1], medians[2]
    );
    let lo = medians.iter().min().copied().unwrap_or_default();
    let hi = medians.iter().max().copied().unwrap_or_default();
    // Before: unknown and cost-4 users took one cost-4 check, the cost-7 user 8 times as
    // long; now each takes one check of each cost. A factor of 2 leaves room for noise.
    assert!(
        hi.as_secs_f64() < lo.as_secs_f64() * 2.0,
        "distinguishable: {medians:?}"
    );

    // Flood: 40 clients sending distinct wrong passwords, while a cached login is watched
    // and a first login is made.
    let watchdog = Watchdog::start(&healthy, Some(("cheap", "cheap-pw")));
    let stop = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..40)
        .map(|c| {
            let (url, stop) = (metrics.clone(), stop.clone());
            tokio::spawn(async move {
                let client = common::client();
                let (mut sent, mut busy) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let r = client
                        .get(&url)
                        .basic_auth("costly", Some(format!("guess-{c}-{sent}")))
                        .send()
                        .await;
                    sent += 1;
                    busy += usize::from(r.is_ok_and(|r| r.status().as_u16() == 429));
                }
                (sent, busy)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = Instant::now();
    let first = common::client()
        .get(&metrics)
        .basic_auth("first", Some("first-pw"))
        .send()
        .await
        .expect("first login");
    let first_wait = asked.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut sent, mut busy) = (0, 0);
    for f in floods {
        let (s, b) = f.await.expect("flood");
        sent += s;
        busy += b;
    }
    let report = watchdog.finish("bcrypt flood");
    eprintln!(
        "flood: {sent} wrong passwords ({busy} answered 429); first login {:?} after {first_wait:?}; cached login slowest {:?}",
        first.status(),
        report.slowest
    );
    assert_eq!(first.status().as_u16(), 200);
    assert!(
        first_wait < Duration::from_secs(5),
        "first login waited {first_wait:?}"
    );
}

#[tokio::test]
async fn a_fifo_as_the_exporter_config_is_refused_without_hanging() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("fifo.yml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let fifo_text = fifo.display().to_string();

    // At start: a clear error, at once.
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(common::LOOKOUT)
            .args(["exporter", "--config.file", &fifo_text])
            .args([
                "--web.listen-address",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .output(),
    )
    .await
    .expect("start-up with a FIFO hung")
    .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is not a regular file"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // On reload and SIGHUP: the running config stays, nothing hangs, SIGTERM ends it.
    let port = free_port();
    let good = write_file(dir.path(), "exporter.yml", "modules: {}\n");
    let mut child = tokio::process::Command::new(common::LOOKOUT)
        .args(["exporter", "--config.file", &good])
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    common::wait_ready("lookout exporter", &format!("{base}/-/ready")).await;
    let watchdog = Watchdog::start(&format!("{base}/-/healthy"), None);
    std::fs::remove_file(&good).expect("remove");
    std::fs::rename(&fifo, &good).expect("rename the FIFO");
    let asked = Instant::now();
    let reload = common::client()
        .post(format!("{base}/-/reload"))
        .send()
        .await
        .expect("reload answered");
    assert_eq!(reload.status().as_u16(), 500);
    let body = reload.text().await.expect("body");
    assert!(body.contains("is not a regular file"), "{body}");
    assert!(asked.elapsed() < Duration::from_secs(2));
    let pid = child.id().expect("pid").to_string();
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
    };
    assert!(signal("-HUP").success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let healthy = common::status_of("GET", &format!("{base}/-/healthy")).await;
    assert_eq!(healthy, Some(200));
    watchdog.finish("FIFO reloads");
    assert!(signal("-TERM").success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("SIGTERM did not end the exporter")
        .expect("wait");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn http2_head_without_credentials_gets_401_like_get() {
    let _serial = crate::support::serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed(dir.path());
    let web = format!(
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbasic_auth_users:\n  alice: '{}'\n",
        hash("pw", 4)
    );
    let web_file = write_file(dir.path(), "web.yml", &web);
    let extra = ["--web.config.file".to_string(), web_file];
    let (_process, base) = exporter(dir.path(), "modules: {}\n", &extra, "https").await;
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    common::eventually("exporter up", 100, Duration::from_millis(100), || {
        let req = client.get(format!("{base}/-/healthy")).send();
        async move { req.await.ok() }
    })
    .await;
    for path in ["/no/such/path", "/metrics", "/-/healthy", "/probe"] {
        for method in [reqwest::Method::HEAD, reqwest::Method::GET] {
            let r = client
                .request(method.clone(), format!("{base}{path}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path} over HTTP/2: {e:?}"));
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(r.status().as_u16(), 401, "{method} {path}");
            assert_eq!(r.headers()["www-authenticate"], "Basic");
        }
    }
}
