//! The email receiver against a loopback SMTP server written here: EHLO, STARTTLS with a
//! certificate made by rcgen, AUTH PLAIN or LOGIN, MAIL/RCPT/DATA. What arrives is checked:
//! envelope, credentials, headers and both body parts; and that a server without STARTTLS
//! gets nothing while `require_tls` holds.

mod scrape_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use lookout_evaluator::alert::{Alert, Notify};
use lookout_evaluator::notifier::dispatch::{Integration, Notification};
use lookout_evaluator::notifier::email::{EmailConfig, EmailIntegration};
use lookout_evaluator::notifier::{AlertingConfig, NotifierManager, NotifierOptions};
use lookout_promql::Labels;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What the server saw in one session.
#[derive(Clone, Debug, Default)]
struct Session {
    ehlo: String,
    tls_before_auth: bool,
    auth: Vec<String>,
    mail_from: String,
    rcpt_to: Vec<String>,
    data: String,
}

#[derive(Clone, Copy)]
struct ServerOpts {
    starttls: bool,
    mechs: &'static str,
}

type Sessions = Arc<Mutex<Vec<Session>>>;

fn b64d(s: &str) -> String {
    String::from_utf8_lossy(
        &base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .unwrap_or_default(),
    )
    .into_owned()
}

enum Next<S> {
    Done,
    StartTls(S),
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tls: bool,
    opts: ServerOpts,
    session: &mut Session,
) -> Next<S> {
    let mut io = BufReader::new(stream);
    let mut line = String::new();
    macro_rules! say {
        ($s:expr) => {
            if io.get_mut().write_all($s.as_bytes()).await.is_err() {
                return Next::Done;
            }
        };
    }
    macro_rules! read {
        () => {{
            line.clear();
            match io.read_line(&mut line).await {
                Ok(0) | Err(_) => return Next::Done,
                Ok(_) => line.trim_end().to_string(),
            }
        }};
    }
    loop {
        let cmd = read!();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            session.ehlo = cmd[4..].trim().to_string();
            let mut reply = String::from("250-test.local\r\n");
            if opts.starttls && !tls {
                reply.push_str("250-STARTTLS\r\n");
            }
            if tls || !opts.starttls {
                reply.push_str(&format!("250-AUTH {}\r\n", opts.mechs));
            }
            reply.push_str("250 8BITMIME\r\n");
            say!(reply);
        } else if upper == "STARTTLS" {
            say!("220 ready\r\n");
            return Next::StartTls(io.into_inner());
        } else if let Some(token) = upper.strip_prefix("AUTH PLAIN ") {
            let _ = token;
            session.tls_before_auth = tls;
            session.auth.push(format!("PLAIN {}", b64d(&cmd[11..])));
            say!("235 ok\r\n");
        } else if upper == "AUTH LOGIN" {
            session.tls_before_auth = tls;
            say!("334 VXNlcm5hbWU6\r\n");
            let user = b64d(&read!());
            say!("334 UGFzc3dvcmQ6\r\n");
            let pass = b64d(&read!());
            session.auth.push(format!("LOGIN {user} {pass}"));
            say!("235 ok\r\n");
        } else if upper.starts_with("MAIL FROM:") {
            session.mail_from = cmd[10..].to_string();
            say!("250 ok\r\n");
        } else if upper.starts_with("RCPT TO:") {
            session.rcpt_to.push(cmd[8..].to_string());
            say!("250 ok\r\n");
        } else if upper == "DATA" {
            say!("354 go\r\n");
            loop {
                let l = read!();
                if l == "." {
                    break;
                }
                session.data.push_str(l.strip_prefix('.').unwrap_or(&l));
                session.data.push('\n');
            }
            say!("250 queued\r\n");
        } else if upper == "QUIT" {
            say!("221 bye\r\n");
            return Next::Done;
        } else {
            say!("502 unknown\r\n");
        }
    }
}

/// Starts the server; returns its port, the CA PEM its certificate verifies with, and the
/// sessions it records.
async fn smtp_server(opts: ServerOpts) -> (u16, String, Sessions) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_pem = ck.cert.pem();
    let cert_der = ck.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert_der], key_der)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sessions: Sessions = Arc::default();
    let s = sessions.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                let mut session = Session::default();
                if tcp.write_all(b"220 test.local ESMTP\r\n").await.is_ok()
                    && let Next::StartTls(tcp) = serve(tcp, false, opts, &mut session).await
                    && let Ok(tls) = acceptor.accept(tcp).await
                {
                    serve(tls, true, opts, &mut session).await;
                }
                s.lock().expect("lock").push(session);
            });
        }
    });
    (port, cert_pem, sessions)
}

fn alert(name: &str, instance: &str) -> Alert {
    let now = SystemTime::now();
    Alert {
        labels: Labels::new([
            ("alertname", name),
            ("instance", instance),
            ("severity", "critical"),
        ]),
        annotations: BTreeMap::from([(
            "summary".to_string(),
            format!("Server {instance} is down <now> & then"),
        )]),
        starts_at: now - Duration::from_secs(60),
        ends_at: Some(now + Duration::from_secs(600)),
        generator_url: "http://lookout:9095/graph?g0.expr=up".to_string(),
    }
}

/// The decoded text of the MIME part with `content_type`.
fn part(data: &str, content_type: &str) -> String {
    let start = data
        .find(&format!("Content-Type: {content_type}"))
        .unwrap_or_else(|| panic!("no {content_type} part in {data}"));
    let rest = &data[start..];
    let body_start = rest.find("\n\n").expect("part body") + 2;
    let body: String = rest[body_start..]
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect();
    b64d(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_auth_plain_through_a_route() {
    let (port, ca, sessions) = smtp_server(ServerOpts {
        starttls: true,
        mechs: "LOGIN PLAIN",
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ca.pem"), &ca).expect("ca");
    std::fs::write(dir.path().join("pw"), "s3cret\n").expect("pw");
    let yaml = format!(
        "route:
  receiver: mail
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
receivers:
  - name: mail
    email_configs:
      - to: 'ops@example.org, Second <second@example.org>'
        from: 'Lookout <lookout@example.org>'
        smarthost: '127.0.0.1:{port}'
        hello: lookout.test
        auth_username: alice
        auth_password_file: '{}'
        headers:
          Subject: 'Outage: {{{{ alertname }}}}'
          X-Team: sre
        tls_config:
          ca_file: '{}'
          server_name: localhost
",
        dir.path().join("pw").display(),
        dir.path().join("ca.pem").display()
    );
    let cfg: AlertingConfig = serde_yaml_ng::from_str(&yaml).expect("config");
    let mut registry = Registry::default();
    let notifier = NotifierManager::new(
        NotifierOptions {
            external_url: "http://lookout:9095".into(),
            ..Default::default()
        },
        &mut registry,
    );
    notifier
        .apply_config(&cfg, &Labels::default())
        .expect("apply");
    let (tx, task) = scrape_support::run_notifier(&notifier);
    notifier.send(vec![alert("ServerDown", "api"), alert("ServerDown", "db")]);
    let got = scrape_support::eventually(Duration::from_secs(10), || {
        let s = sessions.clone();
        async move { s.lock().expect("lock").first().cloned() }
    })
    .await
    .expect("an email arrives");
    let _ = tx.send(());
    let _ = task.await;

    assert!(got.tls_before_auth, "AUTH only after STARTTLS: {got:?}");
    assert_eq!(got.auth, ["PLAIN \0alice\0s3cret"]);
    assert_eq!(got.mail_from, "<lookout@example.org>");
    assert_eq!(got.rcpt_to, ["<ops@example.org>", "<second@example.org>"]);
    let d = &got.data;
    assert!(d.contains("From: Lookout <lookout@example.org>\n"), "{d}");
    assert!(
        d.contains("To: ops@example.org, Second <second@example.org>\n"),
        "{d}"
    );
    assert!(d.contains("Subject: Outage: {{ alertname }}\n"), "{d}");
    assert!(d.contains("X-Team: sre\n"), "{d}");
    assert!(d.contains("MIME-Version: 1.0\n"), "{d}");
    let text = part(d, "text/plain");
    assert!(text.contains("Firing alerts (2):"), "{text}");
    assert!(
        text.contains("- ServerDown instance=api severity=critical"),
        "{text}"
    );
    assert!(
        text.contains("summary: Server db is down <now> & then"),
        "{text}"
    );
    assert!(
        text.contains("Sent by Lookout http://lookout:9095"),
        "{text}"
    );
    let html = part(d, "text/html");
    assert!(html.contains("<b>ServerDown</b> instance=api"), "{html}");
    assert!(
        html.contains("Server api is down &lt;now&gt; &amp; then"),
        "{html}"
    );
    // One message for the group.
    assert_eq!(sessions.lock().expect("lock").len(), 1);
}

fn notification(alerts: Vec<Alert>) -> Notification {
    Notification {
        receiver: "mail".into(),
        group_key: "{}:{}".into(),
        group_labels: Labels::new([("alertname", "ServerDown")]),
        alerts,
        now: SystemTime::now(),
        external_url: String::new(),
    }
}

fn email(yaml: &str) -> EmailIntegration {
    let cfg: EmailConfig = serde_yaml_ng::from_str(yaml).expect("email config");
    cfg.validate().expect("valid");
    EmailIntegration::new(cfg)
}

#[tokio::test]
async fn auth_login_and_default_subject() {
    let (port, ca, sessions) = smtp_server(ServerOpts {
        starttls: true,
        mechs: "LOGIN",
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ca.pem"), &ca).expect("ca");
    let e = email(&format!(
        "{{to: a@example.org, from: l@example.org, smarthost: '127.0.0.1:{port}', auth_username: bob, auth_password: pw, tls_config: {{ca_file: '{}', server_name: localhost}}}}",
        dir.path().join("ca.pem").display()
    ));
    e.notify(&notification(vec![alert("ServerDown", "api")]))
        .await
        .expect("delivered");
    let got = sessions.lock().expect("lock")[0].clone();
    assert_eq!(got.auth, ["LOGIN bob pw"]);
    assert!(got.tls_before_auth);
    assert!(
        got.data
            .contains("Subject: [FIRING:1] ServerDown (api critical)\n"),
        "{}",
        got.data
    );
}

#[tokio::test]
async fn require_tls_refuses_a_server_without_starttls() {
    let (port, _ca, sessions) = smtp_server(ServerOpts {
        starttls: false,
        mechs: "PLAIN",
    })
    .await;
    let e = email(&format!(
        "{{to: a@example.org, from: l@example.org, smarthost: '127.0.0.1:{port}'}}"
    ));
    let err = e
        .notify(&notification(vec![alert("ServerDown", "api")]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("STARTTLS"), "{err}");
    // With require_tls off, it is delivered in clear (AUTH allowed on loopback only).
    let e = email(&format!(
        "{{to: a@example.org, from: l@example.org, smarthost: '127.0.0.1:{port}', require_tls: false, auth_username: u, auth_password: p}}"
    ));
    e.notify(&notification(vec![alert("ServerDown", "api")]))
        .await
        .expect("delivered");
    let s = sessions.lock().expect("lock").clone();
    let delivered: Vec<&Session> = s.iter().filter(|x| !x.data.is_empty()).collect();
    assert_eq!(delivered.len(), 1, "{s:?}");
    assert_eq!(delivered[0].auth, ["PLAIN \0u\0p"]);
}

#[tokio::test]
async fn a_silent_server_is_bounded_by_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let e = email(&format!(
        "{{to: a@example.org, from: l@example.org, smarthost: '127.0.0.1:{port}', timeout: 300ms}}"
    ));
    let start = std::time::Instant::now();
    let err = e
        .notify(&notification(vec![alert("ServerDown", "api")]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("timed out"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn invalid_email_configs_are_refused() {
    for bad in [
        "{to: '', from: l@x, smarthost: 'h:25'}",
        "{to: a@x, from: l@x, smarthost: 'nohost'}",
        "{to: 'not an address', from: l@x, smarthost: 'h:25'}",
        "{to: a@x, from: l@x, smarthost: 'h:25', auth_password: a, auth_password_file: /f}",
        "{to: a@x, from: l@x, smarthost: 'h:25', headers: {'Bad Name': x}}",
    ] {
        let cfg: EmailConfig = serde_yaml_ng::from_str(bad).expect("decodes");
        assert!(cfg.validate().is_err(), "{bad}");
    }
}

/// The header `name` of a received message.
fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    data.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_envelope_auth_and_subject_as_alertmanager() {
    let (port, ca, sessions) = smtp_server(ServerOpts {
        starttls: true,
        mechs: "PLAIN LOGIN",
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ca.pem"), &ca).expect("ca");
    let ca_file = dir.path().join("ca.pem").display().to_string();
    let receivers = |hello: &str| {
        format!(
            "route:
  receiver: mail
  group_by: [alertname]
  group_wait: 1s
receivers:
  - name: mail
    email_configs:
      - to: 'ops@example.org, Second <second@example.org>'
        from: 'lookout@example.org'
        smarthost: '127.0.0.1:{port}'
        hello: {hello}
        auth_username: alice
        auth_password: s3cret
        auth_identity: ops
        tls_config:
          ca_file: '{ca_file}'
          server_name: localhost
"
        )
    };
    let (_am, am_port) =
        scrape_support::start_alertmanager_with(dir.path(), &receivers("am.test")).await;
    // One notifier feeds the Alertmanager and Lookout's own email receiver.
    let cfg: AlertingConfig = serde_yaml_ng::from_str(&format!(
        "alertmanagers:\n  - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\n{}",
        receivers("lookout.test")
    ))
    .expect("config");
    let mut registry = Registry::default();
    let notifier = NotifierManager::new(NotifierOptions::default(), &mut registry);
    notifier
        .apply_config(&cfg, &Labels::default())
        .expect("apply");
    let (tx, task) = scrape_support::run_notifier(&notifier);
    notifier.send(vec![alert("ServerDown", "api"), alert("ServerDown", "db")]);
    let both = scrape_support::eventually(Duration::from_secs(20), || {
        let s = sessions.clone();
        async move {
            let s = s.lock().expect("lock");
            let pick = |h: &str| {
                s.iter()
                    .find(|x| x.ehlo == h && !x.data.is_empty())
                    .cloned()
            };
            Some((pick("am.test")?, pick("lookout.test")?))
        }
    })
    .await
    .expect("both send an email");
    let _ = tx.send(());
    let _ = task.await;
    let (am, lk) = both;
    assert!(am.tls_before_auth && lk.tls_before_auth);
    assert_eq!(am.auth, lk.auth);
    assert_eq!(lk.auth, ["PLAIN ops\0alice\0s3cret"]);
    // Alertmanager (Go's net/smtp) adds BODY=8BITMIME when offered; Lookout's bodies are
    // base64, so it has no need to.
    let addr = |m: &str| m.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(addr(&am.mail_from), addr(&lk.mail_from));
    assert_eq!(am.rcpt_to, lk.rcpt_to);
    for h in ["Subject", "To", "From"] {
        assert_eq!(
            header(&am.data, h),
            header(&lk.data, h),
            "{h}:\n{}\n---\n{}",
            am.data,
            lk.data
        );
    }
    assert_eq!(
        header(&lk.data, "Subject"),
        Some("[FIRING:2] ServerDown (critical)")
    );
}
