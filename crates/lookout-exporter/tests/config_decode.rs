//! Configuration decoding: blackbox.yml compatibility, defaults, and errors that name the
//! file, line and column.

use std::path::Path;
use std::time::Duration;

use lookout_exporter::config::{
    Compression, Config, DEFAULT_TARGET_INTERVAL, DnsTransport, IpProtocol, ProberKind, TlsVersion,
};

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn err(text: &str) -> String {
    match Config::parse(text, "exporter.yml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn debian_blackbox_yml_loads_unchanged() {
    let config = Config::load(&data("blackbox.yml")).expect("Debian's modules load");
    let names: Vec<&str> = config.modules.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "http_2xx",
            "http_post_2xx",
            "icmp",
            "icmp_ttl5",
            "irc_banner",
            "pop3s_banner",
            "ssh_banner",
            "tcp_connect"
        ]
    );
    let post = &config.modules["http_post_2xx"];
    assert_eq!(post.prober, ProberKind::Http);
    assert_eq!(post.http.method, "POST");
    let irc = &config.modules["irc_banner"].tcp;
    assert_eq!(irc.query_response.len(), 4);
    assert_eq!(irc.query_response[2].send.as_deref(), Some("PONG ${1}"));
    assert!(irc.query_response[2].expect.is_some());
    let pop3s = &config.modules["pop3s_banner"].tcp;
    assert!(pop3s.tls);
    assert!(!pop3s.tls_config.insecure_skip_verify);
    let ttl5 = &config.modules["icmp_ttl5"];
    assert_eq!(ttl5.timeout, Duration::from_secs(5));
    assert_eq!(ttl5.icmp.ttl, 5);
}

#[test]
fn debian_file_with_grpc_loads_unchanged() {
    let config = Config::load(&data("blackbox-debian-full.yml")).expect("Debian's file loads");
    let grpc = &config.modules["grpc"];
    assert_eq!(grpc.prober, ProberKind::Grpc);
    assert!(grpc.grpc.tls);
    assert_eq!(grpc.grpc.preferred_ip_protocol, IpProtocol::Ip4);
    let plain = &config.modules["grpc_plain"].grpc;
    assert!(!plain.tls);
    assert_eq!(plain.service, "service1");
    assert!(plain.ip_protocol_fallback);
}

#[test]
fn unknown_probers_are_named_at_their_line() {
    let e = err("modules:\n  u:\n    prober: smtp\n");
    assert!(e.contains("exporter.yml:3:13: "), "{e}");
    assert!(
        e.contains(
            "unknown prober \"smtp\" (supported: http, tcp, dns, icmp, grpc, unix, websocket)"
        ),
        "{e}"
    );
}

#[test]
fn defaults_match_blackbox_exporter() {
    let c = Config::parse(
        "modules:\n  h: {prober: http}\n  d:\n    prober: dns\n    dns: {query_name: example.org}\n",
        "x.yml",
    )
    .expect("valid");
    let h = &c.modules["h"];
    assert_eq!(h.timeout, Duration::ZERO);
    assert_eq!(h.http.method, "GET");
    assert!(h.http.follow_redirects);
    assert!(h.http.ip_protocol_fallback);
    assert_eq!(h.http.preferred_ip_protocol, IpProtocol::Ip6);
    assert!(h.http.valid_status_codes.is_empty());
    assert_eq!(h.http.body_size_limit, None);
    assert_eq!(h.tcp.preferred_ip_protocol, IpProtocol::Ip6);
    assert!(h.icmp.ip_protocol_fallback);
    let d = &c.modules["d"].dns;
    assert_eq!(d.query_type, hickory_proto::rr::RecordType::ANY);
    assert_eq!(d.query_class, hickory_proto::rr::DNSClass::IN);
    assert_eq!(d.transport_protocol, DnsTransport::Udp);
    assert!(d.recursion_desired);
    assert_eq!(d.valid_rcodes, vec![0]);
}

#[test]
fn full_configuration_decodes() {
    let text = r#"
modules:
  web:
    prober: http
    timeout: 5s
    http:
      valid_status_codes: [200, 204]
      valid_http_versions: ["HTTP/1.1", "HTTP/2.0"]
      method: POST
      headers:
        Content-Type: application/json
        Accept-Encoding: gzip
      body: '{"ping": true}'
      compression: gzip
      no_follow_redirects: true
      fail_if_ssl: false
      fail_if_not_ssl: true
      fail_if_body_matches_regexp: ["error"]
      fail_if_body_not_matches_regexp: ["ok"]
      fail_if_header_matches:
        - header: X-Bad
          regexp: "yes"
          allow_missing: true
      fail_if_header_not_matches:
        - header: Content-Type
          regexp: "json"
      body_size_limit: 1MB
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
      basic_auth: {username: u, password: p}
      tls_config:
        ca_file: /etc/ssl/ca.pem
        server_name: example.org
        insecure_skip_verify: true
        min_version: TLS12
  unlimited:
    prober: http
    http: {body_size_limit: 0}
  dns_udp:
    prober: dns
    timeout: 1500ms
    dns:
      query_name: example.org
      query_type: A
      transport_protocol: tcp
      recursion_desired: false
      valid_rcodes: [NOERROR, NXDOMAIN]
      validate_answer_rrs:
        fail_if_matches_regexp: [".*127.0.0.1"]
        fail_if_all_match_regexp: ["x"]
        fail_if_not_matches_regexp: ["example.org.\t300\tIN\tA\t.*"]
        fail_if_none_matches_regexp: ["y"]
      validate_authority_rrs: {fail_if_matches_regexp: [".*"]}
  ping:
    prober: icmp
    icmp: {preferred_ip_protocol: ip4, payload_size: 56, dont_fragment: true, ttl: 64, source_ip_address: 127.0.0.1}
targets:
  - name: lb
    module: web
    target: https://lb.example.org/
  - name: app
    module: web
    target: https://app.example.org/health
    interval: 1m
    labels: {team: web, env: prod}
    depends_on: [lb, resolver]
  - name: resolver
    module: dns_udp
    target: 127.0.0.1:53
heartbeats:
  - name: nightly-backup
    max_silence: 1d
"#;
    let c = Config::parse(text, "full.yml").expect("valid");
    let web = &c.modules["web"].http;
    assert_eq!(c.modules["web"].timeout, Duration::from_secs(5));
    assert_eq!(web.valid_status_codes, vec![200, 204]);
    assert!(!web.follow_redirects);
    assert_eq!(web.compression, Compression::Gzip);
    assert_eq!(web.body_size_limit, Some(1 << 20));
    assert_eq!(web.fail_if_header_matches[0].header, "X-Bad");
    assert!(web.fail_if_header_matches[0].allow_missing);
    assert_eq!(web.preferred_ip_protocol, IpProtocol::Ip4);
    assert!(!web.ip_protocol_fallback);
    assert_eq!(web.tls_config.min_version, Some(TlsVersion::Tls12));
    assert_eq!(
        web.basic_auth.as_ref().map(|b| b.username.as_str()),
        Some("u")
    );
    assert_eq!(c.modules["unlimited"].http.body_size_limit, None);
    let dns = &c.modules["dns_udp"].dns;
    assert_eq!(c.modules["dns_udp"].timeout, Duration::from_millis(1500));
    assert_eq!(dns.query_type, hickory_proto::rr::RecordType::A);
    assert_eq!(dns.valid_rcodes, vec![0, 3]);
    assert_eq!(dns.validate_answer_rrs.fail_if_matches_regexp.len(), 1);
    assert_eq!(c.modules["ping"].icmp.ttl, 64);
    assert_eq!(c.targets.len(), 3);
    assert_eq!(c.targets[0].interval, DEFAULT_TARGET_INTERVAL);
    assert_eq!(c.targets[1].interval, Duration::from_secs(60));
    assert_eq!(c.targets[1].labels["team"], "web");
    assert_eq!(c.targets[1].depends_on, vec!["lb", "resolver"]);
    assert_eq!(c.heartbeats[0].max_silence, Duration::from_secs(86_400));
}

#[test]
fn empty_file_is_an_empty_config() {
    let c = Config::parse("", "empty.yml").expect("empty is valid");
    assert!(c.modules.is_empty() && c.targets.is_empty() && c.heartbeats.is_empty());
}

#[test]
fn errors_name_file_line_and_column() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "modules:\n  m:\n    prober: http\n    htp: {}\n",
            "exporter.yml:4:5",
            "unknown field `htp`",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      metod: GET\n",
            "exporter.yml:5:7",
            "unknown field `metod`",
        ),
        (
            "modules:\n  m:\n    prober: http\n    timeout: 5 seconds\n",
            "exporter.yml:4:14",
            "invalid duration",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      fail_if_body_matches_regexp: [\"(unclosed\"]\n",
            "exporter.yml:5:37",
            "invalid regular expression",
        ),
        (
            "modules:\n  m:\n    prober: smtp\n",
            "exporter.yml:3:13",
            "unknown prober \"smtp\"",
        ),
        (
            "modules:\n  m:\n    prober: tcp\n    tcp:\n      query_response:\n        - expect: \"[\"\n",
            "exporter.yml:6:19",
            "invalid regular expression",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      proxy_url: socks5://proxy:1080\n",
            "exporter.yml:5:18",
            "proxy URL scheme \"socks5\" is not supported by Lookout",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      enable_http3: true\n",
            "exporter.yml:5:21",
            "enable_http3: true is not supported by Lookout",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      no_proxy: example.com\n",
            "exporter.yml:5:7",
            "if no_proxy is configured, proxy_url must also be configured",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      proxy_url: http://p:3128\n      proxy_from_environment: true\n",
            "exporter.yml:6:7",
            "if proxy_from_environment is configured, proxy_url must not be configured",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      http_headers:\n        authorization: {values: [x]}\n",
            "exporter.yml:5:7",
            "setting header \"Authorization\" is not allowed",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      oauth2:\n        client_id: c\n        token_url: http://t/token\n        grant_type: urn:ietf:params:oauth:grant-type:jwt-bearer\n",
            "exporter.yml:8:9",
            "grant_type",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      oauth2:\n        client_id: c\n        claims: {a: b}\n",
            "exporter.yml:7:17",
            "not supported by Lookout",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      oauth2: {client_id: c}\n",
            "exporter.yml:5:7",
            "oauth2 token_url must be configured",
        ),
        (
            "modules:\n  m:\n    prober: dns\n",
            "exporter.yml:3:5",
            "query name must be set",
        ),
        (
            "modules:\n  m:\n    prober: dns\n    dns:\n      query_name: x\n      query_type: BOGUS\n",
            "exporter.yml:6:7",
            "query type \"BOGUS\" is not valid",
        ),
        (
            "modules:\n  m:\n    prober: dns\n    dns:\n      query_name: x\n      valid_rcodes: [NOPE]\n",
            "exporter.yml:6:7",
            "invalid rcode",
        ),
        (
            "modules:\n  m:\n    prober: icmp\n    icmp:\n      ttl: 300\n",
            "exporter.yml:5:7",
            "ttl",
        ),
        (
            "modules:\n  m: {prober: http}\ntargets:\n  - name: a\n    module: m\n    target: x\n  - name: b\n    module: missing\n    target: y\n",
            "exporter.yml:8:5",
            "unknown module \"missing\"",
        ),
        (
            "modules:\n  m: {prober: http}\ntargets:\n- name: a\n  module: m\n  target: x\n- name: a\n  module: m\n  target: y\n",
            "exporter.yml:7:3",
            "duplicate target name \"a\" (first defined on line 4)",
        ),
        (
            "modules:\n  m: {prober: http}\ntargets:\n- name: a\n  module: m\n  target: x\n  depends_on: [ghost]\n",
            "exporter.yml:7:3",
            "unknown target \"ghost\"",
        ),
        (
            "modules:\n  m: {prober: http}\ntargets:\n- name: a\n  module: m\n  target: x\n  depends_on: [b]\n- name: b\n  module: m\n  target: y\n  depends_on: [c]\n- name: c\n  module: m\n  target: z\n  depends_on: [a]\n",
            "exporter.yml:7:3",
            "cycle: a -> b -> c -> a",
        ),
        (
            "modules:\n  m: {prober: http}\ntargets:\n- name: a\n  module: m\n  target: x\n  interval: 0s\n",
            "exporter.yml:7:3",
            "interval must be greater than 0",
        ),
        (
            "heartbeats:\n  - name: backup\n    max_silence: forever\n",
            "exporter.yml:3:18",
            "invalid duration",
        ),
        (
            "heartbeats:\n  - name: backup\n    max_silence: 1h\n  - name: backup\n    max_silence: 2h\n",
            "exporter.yml:4:5",
            "duplicate heartbeat name",
        ),
        (
            "modules:\n\tm: x\n",
            "exporter.yml:2:1",
            "found character that cannot start any token",
        ),
        ("modules: []\n", "exporter.yml:1:10", "expected a map"),
        (
            "scrape_configs: []\n",
            "exporter.yml:1:1",
            "unknown field `scrape_configs`",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      bearer_token: x\n      basic_auth: {username: u}\n",
            "exporter.yml:4:5",
            "at most one of basic_auth, oauth2, authorization, bearer_token & bearer_token_file",
        ),
        (
            "modules:\n  m:\n    prober: tcp\n    tcp:\n      tls: true\n      tls_config:\n        cert_file: c.pem\n",
            "exporter.yml:6:7",
            "exactly one of key or key_file",
        ),
        (
            "modules:\n  m:\n    prober: http\n    http:\n      compression: gzip\n      headers: {Accept-Encoding: 'br, gzip;q=0'}\n",
            "exporter.yml:5:7",
            "invalid configuration \"Accept-Encoding: br, gzip;q=0\", \"compression: gzip\"",
        ),
    ];
    for (text, location, message) in cases {
        let e = err(text);
        assert!(
            e.starts_with(&format!("{location}: ")),
            "expected {location} in {e:?} for:\n{text}"
        );
        assert!(
            e.contains(message),
            "expected {message:?} in {e:?} for:\n{text}"
        );
    }
}

#[test]
fn missing_file_names_the_path() {
    let e = Config::load(Path::new("/nonexistent/exporter.yml"))
        .expect_err("missing file")
        .to_string();
    assert!(e.starts_with("/nonexistent/exporter.yml: "), "{e}");
}

/// The `unix_socket_ping`, `postgresql` and `websocket_example_*` modules of
/// blackbox_exporter's example.yml (after 0.27), as written there.
const NEWER_BLACKBOX_MODULES: &str = r#"modules:
  unix_socket_ping:
    prober: unix
    timeout: 5s
    unix:
      query_response:
        - send: "PING"
        - expect: "PONG"
  postgresql:
    prober: tcp
    tcp:
      query_response:
      - send: !!binary AAAACATSFi8= # 0x00, 0x00, 0x00, 0x08, 0x04, 0xD2, 0x16, 0x2F - PostgreSQL SSLRequest
      - expect_bytes: S # 0x53 - Reply will be 'S' if SSL is enabled, and 'N' if it is not.
      - starttls: true
  websocket_example_basic_auth:
    prober: websocket
    websocket:
      http_config:
        basic_auth:
          username: "user"
          password: "password"
        tls_config:
          insecure_skip_verify: true
      headers:
        X-Some-Header: "my_header"
      query_response:
        - expect: ^Hello,\s(.+)"
          send: "Hello server, i'am ${1}"
        - expect: ^Welcome
  websocket_example_bearer_token:
    prober: websocket
    websocket:
      http_config:
        authorization:
          credentials: "secret_token"
        tls_config:
          insecure_skip_verify: true
      headers:
        X-Some-Header: "my_header"
      query_response:
        - expect: ^Hello,\s(.+)"
          send: "Hello server, i'am ${1}"
        - expect: ^Welcome
"#;

#[test]
fn newer_blackbox_unix_tcp_bytes_and_websocket_modules_load() {
    use lookout_exporter::config::HeaderSource;
    let c = Config::parse(NEWER_BLACKBOX_MODULES, "example.yml").expect("valid");
    let unix = &c.modules["unix_socket_ping"];
    assert_eq!(unix.prober, ProberKind::Unix);
    assert_eq!(unix.unix.query_response[0].send.as_deref(), Some("PING"));
    let pg = &c.modules["postgresql"].tcp.query_response;
    assert_eq!(pg[0].send, None);
    assert_eq!(
        pg[0].send_bytes.as_deref(),
        Some(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f][..])
    );
    assert_eq!(pg[1].expect_bytes.as_deref(), Some(&b"S"[..]));
    assert!(pg[2].starttls);
    let ws = &c.modules["websocket_example_basic_auth"].websocket;
    assert_eq!(
        ws.basic_auth.as_ref().map(|b| b.username.as_str()),
        Some("user")
    );
    assert!(ws.tls_config.insecure_skip_verify);
    assert_eq!(
        ws.headers,
        [(
            "X-Some-Header".to_string(),
            HeaderSource::Value("my_header".into())
        )]
    );
    assert_eq!(ws.query_response.len(), 2);
    let bearer = &c.modules["websocket_example_bearer_token"].websocket;
    let auth = bearer.authorization.as_ref().expect("authorization");
    assert_eq!(
        (auth.kind.as_str(), auth.credentials.as_str()),
        ("Bearer", "secret_token")
    );
}

#[test]
fn bad_unix_websocket_and_binary_settings_name_their_line() {
    let module = |body: &str| format!("modules:\n  m:\n{body}");
    let cases = [
        (
            "    prober: tcp\n    tcp:\n      query_response:\n        - expect: x\n          expect_bytes: y\n",
            "exporter.yml:5:7",
            "expect and expect_bytes are mutually exclusive",
        ),
        (
            "    prober: tcp\n    tcp:\n      query_response:\n        - send: !!binary 'not*base64'\n",
            "exporter.yml:6:11",
            "not valid base64",
        ),
        (
            "    prober: tcp\n    tcp:\n      query_response:\n        - expect: !!binary QQ==\n",
            "exporter.yml:6:19",
            "!!binary is supported only",
        ),
        (
            "    prober: tcp\n    tcp:\n      query_response: [{send: !!binary QQ==}]\n",
            "exporter.yml:5:31",
            "written in block style",
        ),
        (
            "    prober: unix\n    unix:\n      source_ip_address: 127.0.0.1\n",
            "exporter.yml:5:7",
            "unknown field `source_ip_address`",
        ),
        (
            "    prober: websocket\n    websocket:\n      query_response:\n        - expect: x\n          starttls: true\n",
            "exporter.yml:5:7",
            "starttls is not used by the websocket prober",
        ),
        (
            "    prober: websocket\n    websocket:\n      http_config:\n        proxy_url: http://proxy:3128\n",
            "exporter.yml:6:20",
            "not supported by Lookout",
        ),
        (
            "    prober: websocket\n    websocket:\n      headers:\n        Upgrade: h2c\n",
            "exporter.yml:5:7",
            "set by the WebSocket handshake",
        ),
        (
            "    prober: websocket\n    websocket:\n      http_config:\n        basic_auth: {username: u}\n        authorization: {credentials: c}\n",
            "exporter.yml:5:7",
            "at most one of basic_auth & authorization",
        ),
        (
            "    prober: websocket\n    websocket:\n      headers:\n        X-A: {value: x}\n",
            "exporter.yml:6:15",
            "unknown field `value`",
        ),
    ];
    for (body, at, message) in cases {
        let e = err(&module(body));
        assert!(e.starts_with(at) && e.contains(message), "{body}\n{e}");
    }
    let e = err("probe_policy:\n  allowed_unix_sockets: [relative.sock]\n");
    assert!(e.contains("use an absolute path"), "{e}");
}

/// Found by the blackbox differential harness (tests/differential/blackbox-configs.yml):
/// blackbox_exporter refuses a module name given twice, lower-case DNS names and takes
/// any preferred_ip_protocol but "ip6" as IPv4.
#[test]
fn blackbox_config_strictness() {
    let twice = "modules:\n  m:\n    prober: http\n  m:\n    prober: tcp\n";
    assert!(
        err(twice).contains("\"m\" is defined more than once"),
        "{}",
        err(twice)
    );
    for (key, value) in [
        ("query_type", "mx"),
        ("query_class", "ch"),
        ("valid_rcodes", "[nxdomain]"),
    ] {
        let text = format!(
            "modules:\n  d:\n    prober: dns\n    dns:\n      query_name: example.test\n      {key}: {value}\n"
        );
        assert!(err(&text).contains("not valid") || err(&text).contains("invalid rcode"));
    }
    let upper = "modules:\n  d:\n    prober: dns\n    dns:\n      query_name: example.test\n      query_type: MX\n      query_class: CH\n      valid_rcodes: [NXDOMAIN]\n";
    assert!(Config::parse(upper, "exporter.yml").is_ok());
    for value in ["ipv6", "tcp4", "anything"] {
        let text = format!(
            "modules:\n  h:\n    prober: http\n    http:\n      preferred_ip_protocol: {value}\n"
        );
        assert!(err(&text).contains("use ip4 or ip6"), "{}", err(&text));
    }
}
