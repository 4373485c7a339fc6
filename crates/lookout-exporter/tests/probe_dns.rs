//! The DNS prober against an in-process hickory-server authority on loopback UDP and TCP,
//! a hand-made responder for SERVFAIL, a silent socket and a closed port.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_proto::serialize::binary::BinEncodable;
use hickory_server::ServerFuture;
use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::store::in_memory::InMemoryAuthority;
use tokio::net::{TcpListener, UdpSocket};

const SERIAL: u32 = 2_024_010_101;

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

/// An authority for `example.test.` with two A records for `www` and a SOA, on one
/// loopback port for both UDP and TCP.
async fn authority() -> SocketAddr {
    let origin = name("example.test.");
    let mut zone = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
    let soa = SOA::new(
        name("ns.example.test."),
        name("admin.example.test."),
        SERIAL,
        3600,
        600,
        86_400,
        300,
    );
    zone.upsert_mut(Record::from_rdata(origin.clone(), 300, RData::SOA(soa)), 0);
    for last in [1, 2] {
        zone.upsert_mut(
            Record::from_rdata(
                name("www.example.test."),
                300,
                RData::A(A::new(192, 0, 2, last)),
            ),
            0,
        );
    }
    let mut catalog = Catalog::new();
    let zone: Arc<dyn AuthorityObject> = Arc::new(zone);
    catalog.upsert(LowerName::from(&origin), vec![zone]);
    let mut server = ServerFuture::new(catalog);
    // The same port for UDP and TCP; another test may hold the TCP side, so retry.
    let mut attempts = 0;
    let (udp, tcp, addr) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
        let addr = udp.local_addr().expect("addr");
        match TcpListener::bind(addr).await {
            Ok(tcp) => break (udp, tcp, addr),
            Err(e) => {
                attempts += 1;
                assert!(attempts < 50, "no port free for both UDP and TCP: {e}");
            }
        }
    };
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5));
    tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
    addr
}

/// Answers every UDP query with `rcode` and no records.
async fn responder(rcode: ResponseCode) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut response = Message::new();
            response
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_response_code(rcode)
                .add_queries(query.queries().to_vec());
            if let Ok(bytes) = response.to_bytes() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

fn dns_module(extra: &str) -> lookout_exporter::config::Module {
    module(&format!(
        "prober: dns\ndns:\n  preferred_ip_protocol: ip4\n{extra}"
    ))
}

#[tokio::test]
async fn answers_over_udp_and_tcp() {
    let server = authority().await;
    for transport in ["udp", "tcp"] {
        let m = dns_module(&format!(
            "  query_name: www.example.test\n  query_type: A\n  transport_protocol: {transport}"
        ));
        let r = probe(&server.to_string(), &m).await;
        assert_success(&r);
        assert_eq!(value(&r, "probe_dns_query_succeeded"), Some(1.0));
        assert_eq!(value(&r, "probe_dns_answer_rrs"), Some(2.0));
        assert_eq!(value(&r, "probe_dns_authority_rrs"), Some(0.0));
        assert_eq!(value(&r, "probe_ip_protocol"), Some(4.0));
        for phase in ["resolve", "connect", "request"] {
            assert!(labeled(&r, "probe_dns_duration_seconds", &[("phase", phase)]).is_some());
        }
        let obs = r.recorder.dns.as_ref().expect("dns observation");
        assert_eq!(obs.nameserver, server.to_string());
        assert_eq!(obs.query_name, "www.example.test");
        assert_eq!(obs.rcode, "NOERROR");
        let mut answers = obs.answers.clone();
        answers.sort();
        assert_eq!(answers, ["192.0.2.1", "192.0.2.2"]);
    }
}

#[tokio::test]
async fn soa_serial() {
    let server = authority().await;
    let m = dns_module("  query_name: example.test\n  query_type: SOA");
    let r = probe(&server.to_string(), &m).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_dns_serial"), Some(f64::from(SERIAL)));
}

#[tokio::test]
async fn rcodes_are_classified() {
    let server = authority().await;
    let nx = dns_module("  query_name: nope.example.test\n  query_type: A");
    let r = probe(&server.to_string(), &nx).await;
    assert_failure(&r, "nxdomain");
    assert_eq!(value(&r, "probe_dns_query_succeeded"), Some(1.0));
    assert_eq!(value(&r, "probe_dns_authority_rrs"), Some(1.0));
    assert_eq!(
        r.recorder.dns.as_ref().map(|d| d.rcode.as_str()),
        Some("NXDOMAIN")
    );

    let nx_ok = dns_module(
        "  query_name: nope.example.test\n  query_type: A\n  valid_rcodes: [NOERROR, NXDOMAIN]",
    );
    assert_success(&probe(&server.to_string(), &nx_ok).await);

    let refused = dns_module("  query_name: www.elsewhere.test\n  query_type: A");
    assert_failure(&probe(&server.to_string(), &refused).await, "refused");

    let m = dns_module("  query_name: www.example.test\n  query_type: A");
    let servfail = responder(ResponseCode::ServFail).await;
    assert_failure(&probe(&servfail.to_string(), &m).await, "servfail");
    let notimp = responder(ResponseCode::NotImp).await;
    assert_failure(&probe(&notimp.to_string(), &m).await, "rcode_notimp");
}

#[tokio::test]
async fn timeout_and_network_errors() {
    let m = dns_module("  query_name: www.example.test\n  query_type: A");
    // A socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let target = silent.local_addr().expect("addr").to_string();
    let r = probe_with(&target, &m, None, Duration::from_millis(300)).await;
    assert_failure(&r, "timeout");
    assert_eq!(value(&r, "probe_dns_query_succeeded"), Some(0.0));
    drop(silent);

    // A closed UDP port: the ICMP port-unreachable surfaces as a refused receive.
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
        s.local_addr().expect("addr")
    };
    let r = probe(&closed.to_string(), &m).await;
    assert_failure(&r, "network_error");

    let tcp = dns_module("  query_name: www.example.test\n  transport_protocol: tcp");
    let closed_tcp = closed_port().await;
    assert_failure(
        &probe(&closed_tcp.to_string(), &tcp).await,
        "connection_refused",
    );
}

#[tokio::test]
async fn record_validation() {
    let server = authority().await;
    let target = server.to_string();
    let base = "  query_name: www.example.test\n  query_type: A\n";
    let cases: [(&str, Option<&str>); 9] = [
        (
            "validate_answer_rrs: {fail_if_matches_regexp: ['192\\.0\\.2\\.2']}",
            Some("answer_validation"),
        ),
        (
            "validate_answer_rrs: {fail_if_matches_regexp: ['198\\.51']}",
            None,
        ),
        (
            "validate_answer_rrs: {fail_if_not_matches_regexp: ['192\\.0\\.2\\.1']}",
            Some("answer_validation"),
        ),
        (
            "validate_answer_rrs: {fail_if_not_matches_regexp: ['^www\\.example\\.test\\.\\t300\\tIN\\tA\\t192\\.0\\.2\\.[12]$']}",
            None,
        ),
        // As blackbox_exporter's code: fails only when some record does not match.
        (
            "validate_answer_rrs: {fail_if_all_match_regexp: ['192\\.0\\.2\\.']}",
            None,
        ),
        (
            "validate_answer_rrs: {fail_if_all_match_regexp: ['192\\.0\\.2\\.1']}",
            Some("answer_validation"),
        ),
        (
            "validate_answer_rrs: {fail_if_none_matches_regexp: ['192\\.0\\.2\\.9']}",
            Some("answer_validation"),
        ),
        (
            "validate_answer_rrs: {fail_if_none_matches_regexp: ['192\\.0\\.2\\.2']}",
            None,
        ),
        (
            "validate_authority_rrs: {fail_if_not_matches_regexp: ['SOA']}",
            Some("authority_validation"),
        ),
    ];
    for (rule, expected) in cases {
        let m = dns_module(&format!("{base}  {rule}"));
        let r = probe(&target, &m).await;
        match expected {
            None => assert_success(&r),
            Some(reason) => assert_failure(&r, reason),
        }
    }
    // NXDOMAIN carries the SOA in the authority section.
    let m = dns_module(
        "  query_name: nope.example.test\n  query_type: A\n  valid_rcodes: [NXDOMAIN]\n  validate_authority_rrs: {fail_if_not_matches_regexp: ['\\tSOA\\tns\\.example\\.test\\. ']}",
    );
    assert_success(&probe(&target, &m).await);
}

/// DNS over TLS: a TLS listener answering length-prefixed queries with one A record.
async fn dot_server(config: std::sync::Arc<rustls::ServerConfig>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut len = [0u8; 2];
                if tls.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if tls.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let Ok(query) = Message::from_vec(&buf) else {
                    return;
                };
                let mut response = Message::new();
                response
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .add_queries(query.queries().to_vec())
                    .add_answer(Record::from_rdata(
                        name("dot.example.test."),
                        60,
                        RData::A(A::new(192, 0, 2, 53)),
                    ));
                let Ok(bytes) = response.to_bytes() else {
                    return;
                };
                let Ok(n) = u16::try_from(bytes.len()) else {
                    return;
                };
                let _ = tls.write_all(&n.to_be_bytes()).await;
                let _ = tls.write_all(&bytes).await;
                let _ = tls.flush().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn dns_over_tls() {
    let pki = pki(&[]);
    let server = dot_server(pki.server_config.clone()).await;
    let ca = pki.ca_file.display().to_string();
    let m = dns_module(&format!(
        "  query_name: dot.example.test\n  query_type: A\n  transport_protocol: tcp\n  dns_over_tls: true\n  tls_config: {{ca_file: '{ca}', server_name: localhost}}\n  validate_answer_rrs: {{fail_if_none_matches_regexp: ['192\\.0\\.2\\.53']}}"
    ));
    let r = probe(&server.to_string(), &m).await;
    assert_success(&r);
    assert_eq!(
        value(&r, "probe_ssl_earliest_cert_expiry"),
        Some(pki.leaf_not_after as f64)
    );
    assert_eq!(value(&r, "probe_dns_answer_rrs"), Some(1.0));

    let untrusted = dns_module(
        "  query_name: dot.example.test\n  transport_protocol: tcp\n  dns_over_tls: true",
    );
    assert_failure(
        &probe(&server.to_string(), &untrusted).await,
        "tls_handshake",
    );
}

#[tokio::test]
async fn bad_targets() {
    let m = dns_module("  query_name: www.example.test");
    assert_failure(&probe("127.0.0.1:notaport", &m).await, "invalid_target");
    assert_failure(&probe("[::1", &m).await, "invalid_target");
}
