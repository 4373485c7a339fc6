//! A module written back as YAML in the schema the configuration file is read in, for
//! `/probe?debug=true` ("Module configuration:", as blackbox_exporter prints it with
//! `yaml.Marshal`).
//!
//! The text parses back into the same module: durations are written the way
//! [`parse_duration`](super::parse_duration) reads them (`5s`, `1m30s`, `1.5s`, `250ms`),
//! regular expressions as their source text, sizes as a number of bytes (`0` for an
//! unlimited `body_size_limit`), DNS response codes by name, and field names as in
//! blackbox.yml. The prober's own section is always written, other sections only when they
//! differ from their defaults; unset optional fields and empty lists are left out.
//!
//! Secrets (`basic_auth.password`, `bearer_token`, `authorization.credentials`, an inline
//! `tls_config.key`) are written as `<secret>`, as blackbox_exporter does, so that the debug
//! page never shows them; a module pasted back from it needs them filled in again.

use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::{
    Authorization, BasicAuth, DnsProbe, DnsTransport, GrpcProbe, HeaderMatch, HeaderSource,
    HttpProbe, IcmpProbe, IpProtocol, Module, ProberKind, QueryResponse, RrValidator, TcpProbe,
    TlsConfig, TlsVersion, UnixProbe, WebsocketProbe, rcode_name,
};

/// What a secret is written as.
pub(crate) const SECRET: &str = "<secret>";

impl Module {
    /// The module as YAML in the configuration file's schema (see the module documentation).
    pub fn to_yaml(&self) -> String {
        let mut m = Fields::default();
        m.put("prober", self.prober.as_str());
        if !self.timeout.is_zero() {
            m.put("timeout", format_duration(self.timeout));
        }
        let sections = [
            (
                ProberKind::Http,
                "http",
                http(&self.http),
                http(&HttpProbe::default()),
            ),
            (
                ProberKind::Tcp,
                "tcp",
                tcp(&self.tcp),
                tcp(&TcpProbe::default()),
            ),
            (
                ProberKind::Dns,
                "dns",
                dns(&self.dns),
                dns(&DnsProbe::default()),
            ),
            (
                ProberKind::Icmp,
                "icmp",
                icmp(&self.icmp),
                icmp(&IcmpProbe::default()),
            ),
            (
                ProberKind::Grpc,
                "grpc",
                grpc(&self.grpc),
                grpc(&GrpcProbe::default()),
            ),
            (
                ProberKind::Unix,
                "unix",
                unix(&self.unix),
                unix(&UnixProbe::default()),
            ),
            (
                ProberKind::Websocket,
                "websocket",
                websocket(&self.websocket),
                websocket(&WebsocketProbe::default()),
            ),
        ];
        for (kind, name, section, default) in sections {
            if kind == self.prober || section != default {
                m.put(name, section);
            }
        }
        serde_yaml_ng::to_string(&Value::Mapping(m.0))
            .map(|text| text.replace(BINARY_MARKER, "!!binary "))
            .unwrap_or_else(|e| format!("# the module could not be written as YAML: {e}\n"))
    }
}

/// A mapping built field by field, in the order written.
#[derive(Default)]
struct Fields(Mapping);

impl Fields {
    fn put(&mut self, key: &str, value: impl Into<Value>) {
        self.0.insert(Value::from(key), value.into());
    }

    /// Writes `value` unless it is empty (an unset optional, an empty string or list).
    fn put_some(&mut self, key: &str, value: Option<impl Into<Value>>) {
        if let Some(value) = value {
            let value = value.into();
            let empty = match &value {
                Value::String(s) => s.is_empty(),
                Value::Sequence(s) => s.is_empty(),
                Value::Mapping(m) => m.is_empty(),
                _ => false,
            };
            if !empty {
                self.put(key, value);
            }
        }
    }
}

impl From<Fields> for Value {
    fn from(fields: Fields) -> Value {
        Value::Mapping(fields.0)
    }
}

/// A duration as the configuration reads it: `0s`, `5s`, `1h30m`, `1m0.5s`, `250ms`.
pub(crate) fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 {
        return match nanos {
            0 => "0s".into(),
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}us", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let mut out = String::new();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push_str(&format!("{s}.{}s", fraction.trim_end_matches('0')));
    } else if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    Value::Sequence(items.into_iter().map(Value::from).collect())
}

fn regexes(items: &[regex::Regex]) -> Value {
    strings(items.iter().map(regex::Regex::as_str))
}

fn secret(value: &str) -> Option<&'static str> {
    (!value.is_empty()).then_some(SECRET)
}

fn path(p: &Option<std::path::PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

fn ip_protocol(p: IpProtocol) -> &'static str {
    match p {
        IpProtocol::Ip4 => "ip4",
        IpProtocol::Ip6 => "ip6",
    }
}

fn tls_version(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::Tls10 => "TLS10",
        TlsVersion::Tls11 => "TLS11",
        TlsVersion::Tls12 => "TLS12",
        TlsVersion::Tls13 => "TLS13",
    }
}

fn tls(t: &TlsConfig) -> Fields {
    let mut m = Fields::default();
    m.put_some("ca", t.ca.clone());
    m.put_some("ca_file", path(&t.ca_file));
    m.put_some("cert", t.cert.clone());
    m.put_some("cert_file", path(&t.cert_file));
    m.put_some("key", t.key.as_deref().and_then(secret));
    m.put_some("key_file", path(&t.key_file));
    m.put_some("server_name", t.server_name.clone());
    m.put("insecure_skip_verify", t.insecure_skip_verify);
    m.put_some("min_version", t.min_version.map(tls_version));
    m.put_some("max_version", t.max_version.map(tls_version));
    m
}

fn header_matches(items: &[HeaderMatch]) -> Value {
    Value::Sequence(
        items
            .iter()
            .map(|h| {
                let mut m = Fields::default();
                m.put("header", h.header.as_str());
                m.put("regexp", h.regexp.as_str());
                m.put("allow_missing", h.allow_missing);
                m.into()
            })
            .collect(),
    )
}

fn basic_auth(b: &BasicAuth) -> Fields {
    let mut m = Fields::default();
    m.put_some("username", Some(b.username.as_str()));
    m.put_some("username_file", path(&b.username_file));
    m.put_some("password", secret(&b.password));
    m.put_some("password_file", path(&b.password_file));
    m
}

fn authorization(a: &Authorization) -> Fields {
    let mut m = Fields::default();
    m.put("type", a.kind.as_str());
    m.put_some("credentials", secret(&a.credentials));
    m.put_some("credentials_file", path(&a.credentials_file));
    m
}

fn http(h: &HttpProbe) -> Value {
    let mut m = Fields::default();
    m.put_some(
        "valid_status_codes",
        Some(Value::Sequence(
            h.valid_status_codes
                .iter()
                .map(|c| Value::from(*c))
                .collect(),
        )),
    );
    m.put_some(
        "valid_http_versions",
        Some(strings(h.valid_http_versions.iter().map(String::as_str))),
    );
    m.put(
        "preferred_ip_protocol",
        ip_protocol(h.preferred_ip_protocol),
    );
    m.put("ip_protocol_fallback", h.ip_protocol_fallback);
    m.put(
        "skip_resolve_phase_with_proxy",
        h.skip_resolve_phase_with_proxy,
    );
    m.put("follow_redirects", h.follow_redirects);
    m.put("enable_http2", h.enable_http2);
    m.put("fail_if_ssl", h.fail_if_ssl);
    m.put("fail_if_not_ssl", h.fail_if_not_ssl);
    m.put("method", h.method.as_str());
    let mut headers = Fields::default();
    for (name, value) in &h.headers {
        headers.put(name, value.as_str());
    }
    m.put_some("headers", Some(headers));
    m.put_some(
        "fail_if_body_matches_regexp",
        Some(regexes(&h.fail_if_body_matches_regexp)),
    );
    m.put_some(
        "fail_if_body_not_matches_regexp",
        Some(regexes(&h.fail_if_body_not_matches_regexp)),
    );
    m.put_some(
        "fail_if_header_matches",
        Some(header_matches(&h.fail_if_header_matches)),
    );
    m.put_some(
        "fail_if_header_not_matches",
        Some(header_matches(&h.fail_if_header_not_matches)),
    );
    m.put_some("body", Some(h.body.as_str()));
    m.put_some("body_file", path(&h.body_file));
    m.put_some("compression", Some(h.compression.as_str()));
    // `0` is "unlimited", as the file reads it.
    m.put("body_size_limit", h.body_size_limit.unwrap_or(0));
    m.put("tls_config", tls(&h.tls_config));
    if let Some(b) = &h.basic_auth {
        // Written even when empty: an empty `basic_auth:` still sends credentials.
        m.put("basic_auth", basic_auth(b));
    }
    m.put_some("bearer_token", h.bearer_token.as_deref().and_then(secret));
    m.put_some("bearer_token_file", path(&h.bearer_token_file));
    if let Some(a) = &h.authorization {
        m.put("authorization", authorization(a));
    }
    m.into()
}

fn query_response(q: &QueryResponse) -> Value {
    let mut m = Fields::default();
    m.put_some("expect", q.expect.as_ref().map(regex::Regex::as_str));
    m.put_some(
        "labels",
        Some(Value::Sequence(
            q.labels
                .iter()
                .map(|l| {
                    let mut label = Fields::default();
                    label.put("name", l.name.as_str());
                    label.put("value", l.value.as_str());
                    label.into()
                })
                .collect(),
        )),
    );
    if let Some(bytes) = &q.expect_bytes {
        let text = std::str::from_utf8(bytes)
            .ok()
            .filter(|t| !t.chars().any(char::is_control));
        m.put(
            "expect_bytes",
            text.map_or_else(|| binary(bytes), Value::from),
        );
    }
    m.put_some("send", q.send.as_deref());
    if let Some(bytes) = &q.send_bytes {
        m.put("send", binary(bytes));
    }
    m.put("starttls", q.starttls);
    m.into()
}

/// The local tag [`binary`] writes, turned into `!!binary` in the finished text:
/// serde_yaml_ng writes any tag it is given as a local one (`!binary`).
const BINARY_MARKER: &str = "!lookout-binary-bytes ";

/// Bytes as a `!!binary` scalar (see [`BINARY_MARKER`]), which the loader decodes back.
fn binary(bytes: &[u8]) -> Value {
    use base64::Engine as _;
    Value::Tagged(Box::new(serde_yaml_ng::value::TaggedValue {
        tag: serde_yaml_ng::value::Tag::new(BINARY_MARKER.trim()),
        value: Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }))
}

fn query_responses(steps: &[QueryResponse]) -> Option<Value> {
    Some(Value::Sequence(steps.iter().map(query_response).collect()))
}

fn unix(u: &UnixProbe) -> Value {
    let mut m = Fields::default();
    m.put_some("query_response", query_responses(&u.query_response));
    m.put("tls", u.tls);
    m.put("tls_config", tls(&u.tls_config));
    m.into()
}

fn websocket(w: &WebsocketProbe) -> Value {
    let mut client = Fields::default();
    if let Some(b) = &w.basic_auth {
        client.put("basic_auth", basic_auth(b));
    }
    if let Some(a) = &w.authorization {
        client.put("authorization", authorization(a));
    }
    client.put("tls_config", tls(&w.tls_config));
    let mut headers: Vec<(&str, Fields)> = Vec::new();
    for (name, source) in &w.headers {
        if headers.last().is_none_or(|(n, _)| n != name) {
            headers.push((name, Fields::default()));
        }
        let Some((_, lists)) = headers.last_mut() else {
            continue;
        };
        let (key, value) = match source {
            HeaderSource::Value(v) => ("values", v.clone()),
            HeaderSource::Secret(_) => ("secrets", SECRET.to_string()),
            HeaderSource::File(p) => ("files", p.display().to_string()),
        };
        let list = lists
            .0
            .entry(Value::from(key))
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if let Value::Sequence(items) = list {
            items.push(Value::from(value));
        }
    }
    let mut m = Fields::default();
    m.put("http_config", client);
    let mut by_name = Fields::default();
    for (name, lists) in headers {
        by_name.put(name, lists);
    }
    m.put_some("headers", Some(by_name));
    m.put_some("query_response", query_responses(&w.query_response));
    m.put(
        "preferred_ip_protocol",
        ip_protocol(w.preferred_ip_protocol),
    );
    m.put("ip_protocol_fallback", w.ip_protocol_fallback);
    m.into()
}

fn tcp(t: &TcpProbe) -> Value {
    let mut m = Fields::default();
    m.put(
        "preferred_ip_protocol",
        ip_protocol(t.preferred_ip_protocol),
    );
    m.put("ip_protocol_fallback", t.ip_protocol_fallback);
    m.put_some(
        "source_ip_address",
        t.source_ip_address.map(|a| a.to_string()),
    );
    m.put_some("query_response", query_responses(&t.query_response));
    m.put("tls", t.tls);
    m.put("tls_config", tls(&t.tls_config));
    m.into()
}

fn rr_validator(v: &RrValidator) -> Fields {
    let mut m = Fields::default();
    m.put_some(
        "fail_if_matches_regexp",
        Some(regexes(&v.fail_if_matches_regexp)),
    );
    m.put_some(
        "fail_if_all_match_regexp",
        Some(regexes(&v.fail_if_all_match_regexp)),
    );
    m.put_some(
        "fail_if_not_matches_regexp",
        Some(regexes(&v.fail_if_not_matches_regexp)),
    );
    m.put_some(
        "fail_if_none_matches_regexp",
        Some(regexes(&v.fail_if_none_matches_regexp)),
    );
    m
}

fn dns(d: &DnsProbe) -> Value {
    let mut m = Fields::default();
    m.put(
        "preferred_ip_protocol",
        ip_protocol(d.preferred_ip_protocol),
    );
    m.put("ip_protocol_fallback", d.ip_protocol_fallback);
    m.put("dns_over_tls", d.dns_over_tls);
    m.put("tls_config", tls(&d.tls_config));
    m.put_some(
        "source_ip_address",
        d.source_ip_address.map(|a| a.to_string()),
    );
    m.put(
        "transport_protocol",
        match d.transport_protocol {
            DnsTransport::Udp => "udp",
            DnsTransport::Tcp => "tcp",
        },
    );
    m.put("query_class", d.query_class.to_string());
    m.put_some("query_name", Some(d.query_name.as_str()));
    m.put("query_type", d.query_type.to_string());
    m.put("recursion_desired", d.recursion_desired);
    m.put(
        "valid_rcodes",
        Value::Sequence(
            d.valid_rcodes
                .iter()
                .map(|c| Value::from(rcode_name(*c)))
                .collect(),
        ),
    );
    m.put_some(
        "validate_answer_rrs",
        Some(rr_validator(&d.validate_answer_rrs)),
    );
    m.put_some(
        "validate_authority_rrs",
        Some(rr_validator(&d.validate_authority_rrs)),
    );
    m.put_some(
        "validate_additional_rrs",
        Some(rr_validator(&d.validate_additional_rrs)),
    );
    m.into()
}

fn grpc(g: &GrpcProbe) -> Value {
    let mut m = Fields::default();
    m.put_some("service", Some(g.service.as_str()));
    m.put("tls", g.tls);
    m.put("tls_config", tls(&g.tls_config));
    m.put(
        "preferred_ip_protocol",
        ip_protocol(g.preferred_ip_protocol),
    );
    m.put("ip_protocol_fallback", g.ip_protocol_fallback);
    let mut metadata = Fields::default();
    for (key, values) in &g.metadata {
        metadata.put(key, strings(values.iter().map(String::as_str)));
    }
    m.put_some("metadata", Some(metadata));
    m.into()
}

fn icmp(i: &IcmpProbe) -> Value {
    let mut m = Fields::default();
    m.put(
        "preferred_ip_protocol",
        ip_protocol(i.preferred_ip_protocol),
    );
    m.put("ip_protocol_fallback", i.ip_protocol_fallback);
    m.put_some(
        "source_ip_address",
        i.source_ip_address.map(|a| a.to_string()),
    );
    m.put("payload_size", i.payload_size as u64);
    m.put("dont_fragment", i.dont_fragment);
    m.put("ttl", u64::from(i.ttl));
    m.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, parse_duration};

    fn parse_module(yaml: &str) -> Module {
        let indented: String = yaml.lines().map(|l| format!("    {l}\n")).collect();
        let text = format!("modules:\n  m:\n{indented}");
        let mut config =
            Config::parse(&text, "printed.yml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        config.modules.remove("m").expect("module m")
    }

    /// Parses `body`, prints it, parses the print: the same module, printed the same way.
    fn round_trip(body: &str) -> String {
        let module = parse_module(body);
        let printed = module.to_yaml();
        let again = parse_module(&printed);
        // Module has regexes (no PartialEq); Debug shows every field, regexes by source.
        assert_eq!(format!("{module:?}"), format!("{again:?}"), "\n{printed}");
        assert_eq!(printed, again.to_yaml());
        printed
    }

    #[test]
    fn durations_read_back_exactly() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(5),
            Duration::from_secs(90),
            Duration::from_secs(3600),
            Duration::from_secs(5400),
            Duration::from_millis(1500),
            Duration::from_millis(250),
            Duration::from_micros(1500),
            Duration::from_nanos(10),
            Duration::from_millis(61_005),
        ] {
            let text = format_duration(d);
            assert_eq!(parse_duration(&text), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn an_http_module_reads_back_the_same() {
        let printed = round_trip(
            "prober: http
timeout: 5s
http:
  valid_status_codes: [200, 301]
  valid_http_versions: [HTTP/1.1, HTTP/2.0]
  preferred_ip_protocol: ip4
  ip_protocol_fallback: false
  follow_redirects: false
  method: POST
  headers:
    X-Env: prod
    Accept: application/json
  fail_if_body_matches_regexp: ['err(or)?\\s+\\d+']
  fail_if_body_not_matches_regexp: ['^ok$']
  fail_if_header_matches:
    - header: X-Bad
      regexp: 'yes|true'
      allow_missing: true
  fail_if_header_not_matches:
    - header: Server
      regexp: '^nginx'
  body: '{\"ping\": true}'
  compression: gzip
  body_size_limit: 1MiB
  tls_config:
    server_name: example.test
    insecure_skip_verify: true
    min_version: TLS12
  basic_auth:
    username: probe
    password_file: /etc/secret
",
        );
        assert!(printed.contains("timeout: 5s"), "{printed}");
        assert!(printed.contains("body_size_limit: 1048576"), "{printed}");
        assert!(printed.contains("err(or)?\\s+\\d+"), "{printed}");
        // Only the prober's own section.
        assert!(!printed.contains("tcp:"), "{printed}");
        // Unlimited body reads back as unlimited.
        let unlimited = round_trip("prober: http\nhttp:\n  body_size_limit: 0\n");
        assert!(unlimited.contains("body_size_limit: 0"), "{unlimited}");
        // Defaults alone.
        round_trip("prober: http\n");
    }

    #[test]
    fn a_grpc_module_reads_back_the_same() {
        let printed = round_trip(
            "prober: grpc
grpc:
  service: service1
  tls: true
  tls_config:
    insecure_skip_verify: true
  preferred_ip_protocol: ip4
  ip_protocol_fallback: false
  metadata:
    authorization: ['Bearer t']
    x-tag: [a, b]
",
        );
        assert!(printed.contains("x-tag:\n    - a\n    - b"), "{printed}");
        // An HTTP module leaves out the untouched grpc section.
        assert!(!round_trip("prober: http").contains("grpc"));
    }

    #[test]
    fn tcp_dns_and_icmp_modules_read_back_the_same() {
        round_trip(
            "prober: tcp
timeout: 1m30s
tcp:
  preferred_ip_protocol: ip4
  source_ip_address: 127.0.0.1
  query_response:
    - expect: '^SSH-2.0-(\\S+)'
      labels:
        - name: version
          value: '${1}'
    - send: 'QUIT'
      starttls: true
  tls: true
",
        );
        round_trip(
            "prober: dns
timeout: 1.5s
dns:
  transport_protocol: tcp
  query_name: example.com
  query_type: MX
  query_class: CH
  recursion_desired: false
  valid_rcodes: [NOERROR, NXDOMAIN]
  validate_answer_rrs:
    fail_if_matches_regexp: ['.*127\\.0\\.0\\.1']
    fail_if_none_matches_regexp: ['mail']
  validate_additional_rrs:
    fail_if_all_match_regexp: ['x']
",
        );
        round_trip(
            "prober: icmp
timeout: 250ms
icmp:
  preferred_ip_protocol: ip4
  payload_size: 56
  dont_fragment: true
  ttl: 64
",
        );
        let printed = round_trip(
            "prober: tcp
tcp:
  query_response:
    - send: !!binary AAAACATSFi8=
    - expect_bytes: S
    - expect_bytes: !!binary AAE=
    - starttls: true
",
        );
        assert!(printed.contains("send: !!binary AAAACATSFi8="), "{printed}");
        assert!(printed.contains("expect_bytes: !!binary AAE="), "{printed}");
        round_trip(
            "prober: unix
unix:
  query_response:
    - send: PING
    - expect: PONG
  tls: true
  tls_config:
    server_name: sock.internal
",
        );
        let printed = round_trip(
            "prober: websocket
websocket:
  http_config:
    basic_auth:
      username: user
    tls_config:
      insecure_skip_verify: true
  headers:
    X-Some-Header: my_header
    X-Other:
      values: [a, b]
      files: [/etc/hostname]
  query_response:
    - expect: ^Hello,\\s(.+)
      send: Hello server, i'am ${1}
    - expect: ^Welcome
  preferred_ip_protocol: ip4
",
        );
        assert!(printed.contains("X-Some-Header:\n      values:\n      - my_header"));
        let printed = parse_module(
            "prober: websocket\nwebsocket:\n  http_config:\n    authorization:\n      credentials: t0ken\n  headers:\n    X-Key:\n      secrets: [s3cret]\n",
        )
        .to_yaml();
        assert!(
            !printed.contains("t0ken") && !printed.contains("s3cret"),
            "{printed}"
        );
        // A section of another prober is kept when it is set.
        let printed = round_trip("prober: http\ntcp:\n  tls: true\n");
        assert!(printed.contains("tcp:"), "{printed}");
    }

    #[test]
    fn secrets_are_masked() {
        let module = parse_module(
            "prober: http\nhttp:\n  basic_auth:\n    username: u\n    password: hunter2\n",
        );
        let printed = module.to_yaml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("password: <secret>"), "{printed}");
        let module = parse_module("prober: http\nhttp:\n  bearer_token: t0ken\n");
        let printed = module.to_yaml();
        assert!(!printed.contains("t0ken"), "{printed}");
        let module = parse_module(
            "prober: http\nhttp:\n  authorization:\n    type: Token\n    credentials: c3\n",
        );
        let printed = module.to_yaml();
        assert!(!printed.contains("c3\n"), "{printed}");
        assert!(printed.contains("type: Token"), "{printed}");
    }
}
