//! The DNS prober: one query to the nameserver named by the target (`host[:port]`, port 53
//! by default), built with hickory-proto and sent over our own UDP or TCP socket (or TLS for
//! `dns_over_tls`) so that the exchange is timed exactly.
//!
//! As in blackbox_exporter, any response counts as "the query succeeded"
//! (`probe_dns_query_succeeded 1`); the probe then fails when the response code is not in
//! `valid_rcodes` (reason `nxdomain`, `servfail`, `refused` or `rcode_<name>`) or a
//! `validate_*_rrs` check fails. Records are matched in the text form miekg/dns prints,
//! `name<TAB>ttl<TAB>class<TAB>type<TAB>data`, so blackbox regexes keep working.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record};
use hickory_proto::serialize::binary::BinEncodable;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::resolve::resolve_target;
use super::{DnsObservation, Failure, ProbeRequest, Recorder, reason, tls};
use crate::config::{DnsProbe, DnsTransport, RrValidator, rcode_name};

const H_PHASE: &str = "Duration of DNS request by phase";
const H_ANSWER: &str = "Returns number of entries in the answer resource record list";
const H_AUTHORITY: &str = "Returns number of entries in the authority resource record list";
const H_ADDITIONAL: &str = "Returns number of entries in the additional resource record list";
const H_SUCCEEDED: &str = "Displays whether or not the query was executed successfully";

/// Probes a nameserver with the module's query.
pub async fn probe_dns(req: &ProbeRequest<'_>, rec: &mut Recorder) -> Result<(), Failure> {
    let cfg = &req.module.dns;
    set_initial_metrics(rec);
    let mut observation = DnsObservation {
        nameserver: req.target.to_string(),
        query_name: cfg.query_name.clone(),
        ..DnsObservation::default()
    };
    rec.dns = Some(observation.clone());

    let default_port = if cfg.dns_over_tls { 853 } else { 53 };
    let (host, port) = crate::target::host_port(req.target, Some(default_port))?;
    let (ip, resolve_time) = resolve_target(
        rec,
        &host,
        cfg.preferred_ip_protocol,
        cfg.ip_protocol_fallback,
        req.policy,
    )
    .await?;
    record_phase(rec, "resolve", resolve_time);
    let server = SocketAddr::new(ip, port);

    let id = random_u16();
    let wire = encode_query(cfg, id)?;
    rec.log(format!(
        "Making DNS query: target={server} query={} type={} class={} transport={:?}",
        cfg.query_name, cfg.query_type, cfg.query_class, cfg.transport_protocol
    ));
    let exchange = Exchange {
        req,
        server,
        host: &host,
        wire: &wire,
        id,
    };
    let (raw, request_time) = match cfg.transport_protocol {
        DnsTransport::Udp => exchange.udp(rec).await?,
        DnsTransport::Tcp => exchange.tcp(rec).await?,
    };
    record_phase(rec, "request", request_time);
    observation.duration = request_time;

    let response = Message::from_vec(&raw).map_err(|e| {
        Failure::new(
            reason::NETWORK_ERROR,
            format!("cannot parse the DNS response: {e}"),
        )
    })?;
    let rcode = u16::from(response.response_code());
    let rcode_text = rcode_name(rcode);
    record_response(rec, cfg, &response, &rcode_text);
    observation.rcode = rcode_text.clone();
    observation.answers = response
        .answers()
        .iter()
        .map(|r| r.data().to_string())
        .collect();
    rec.dns = Some(observation);
    check_response(cfg, &response, rcode, &rcode_text)
}

/// The metrics a DNS probe always has, at 0 until it gets further.
fn set_initial_metrics(rec: &mut Recorder) {
    for phase in ["resolve", "connect", "request"] {
        record_phase(rec, phase, Duration::ZERO);
    }
    rec.set("probe_dns_answer_rrs", H_ANSWER, 0.0);
    rec.set("probe_dns_authority_rrs", H_AUTHORITY, 0.0);
    rec.set("probe_dns_additional_rrs", H_ADDITIONAL, 0.0);
    rec.set("probe_dns_query_succeeded", H_SUCCEEDED, 0.0);
}

/// The module's query as a DNS message on the wire, with message id `id`.
fn encode_query(cfg: &DnsProbe, id: u16) -> Result<Vec<u8>, Failure> {
    let mut query_name = cfg.query_name.clone();
    if !query_name.ends_with('.') {
        query_name.push('.');
    }
    let name = Name::from_ascii(&query_name).map_err(|e| {
        Failure::new(
            reason::INVALID_TARGET,
            format!("invalid query_name {:?}: {e}", cfg.query_name),
        )
    })?;
    let mut query = Query::query(name, cfg.query_type);
    query.set_query_class(cfg.query_class);
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(cfg.recursion_desired)
        .add_query(query);
    message.to_bytes().map_err(|e| {
        Failure::new(
            reason::INVALID_TARGET,
            format!("cannot encode the query: {e}"),
        )
    })
}

/// One query sent to the nameserver and its answer read back.
struct Exchange<'a> {
    req: &'a ProbeRequest<'a>,
    server: SocketAddr,
    host: &'a str,
    wire: &'a [u8],
    id: u16,
}

impl Exchange<'_> {
    /// A network error while talking to the server, with blackbox's reasons.
    fn network(&self, what: &str, e: std::io::Error) -> Failure {
        let reason = if e.kind() == std::io::ErrorKind::ConnectionRefused
            && self.req.module.dns.transport_protocol == DnsTransport::Tcp
        {
            reason::CONNECTION_REFUSED
        } else {
            reason::NETWORK_ERROR
        };
        Failure::new(
            reason,
            format!(
                "error while sending a DNS query to {} ({what}): {e}",
                self.server
            ),
        )
    }

    /// Over UDP: the answer is the first datagram carrying the query's id.
    async fn udp(&self, rec: &mut Recorder) -> Result<(Vec<u8>, Duration), Failure> {
        let cfg = &self.req.module.dns;
        let connect_start = Instant::now();
        let bind = match (cfg.source_ip_address, self.server.is_ipv6()) {
            (Some(src), _) => SocketAddr::new(src, 0),
            (None, true) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
            (None, false) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        };
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|e| self.network("bind", e))?;
        socket
            .connect(self.server)
            .await
            .map_err(|e| self.network("connect", e))?;
        record_phase(rec, "connect", connect_start.elapsed());
        let start = Instant::now();
        socket
            .send(self.wire)
            .await
            .map_err(|e| self.network("send", e))?;
        let mut buf = vec![0u8; 65_535];
        loop {
            let n = socket
                .recv(&mut buf)
                .await
                .map_err(|e| self.network("receive", e))?;
            // Ignore stray datagrams that are not the answer to this query.
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == self.id {
                return Ok((buf[..n].to_vec(), start.elapsed()));
            }
        }
    }

    /// Over TCP, or DNS over TLS with `dns_over_tls`.
    async fn tcp(&self, rec: &mut Recorder) -> Result<(Vec<u8>, Duration), Failure> {
        let cfg = &self.req.module.dns;
        let connect_start = Instant::now();
        let tcp = super::tcp::connect(self.server, cfg.source_ip_address).await?;
        if !cfg.dns_over_tls {
            let mut tcp = tcp;
            record_phase(rec, "connect", connect_start.elapsed());
            let start = Instant::now();
            let raw = exchange_stream(&mut tcp, self.wire)
                .await
                .map_err(|e| self.network("exchange", e))?;
            return Ok((raw, start.elapsed()));
        }
        let config = tls::client_config(&cfg.tls_config, &[b"dot"])?;
        let name = tls::server_name(&cfg.tls_config, self.req.hostname.unwrap_or(self.host))?;
        let mut stream = tls::handshake(tcp, config, name).await?;
        tls::record_connection_state(
            rec,
            stream.get_ref().1,
            !cfg.tls_config.insecure_skip_verify,
        );
        record_phase(rec, "connect", connect_start.elapsed());
        let start = Instant::now();
        let raw = exchange_stream(&mut stream, self.wire)
            .await
            .map_err(|e| self.network("exchange", e))?;
        Ok((raw, start.elapsed()))
    }
}

/// The answer's section sizes, success and (for SOA queries) the zone's serial.
fn record_response(rec: &mut Recorder, cfg: &DnsProbe, response: &Message, rcode_text: &str) {
    rec.log(format!(
        "Got response: rcode={rcode_text} answers={} authority={} additional={}",
        response.answers().len(),
        response.name_servers().len(),
        response.additionals().len()
    ));
    rec.set(
        "probe_dns_answer_rrs",
        H_ANSWER,
        response.answers().len() as f64,
    );
    rec.set(
        "probe_dns_authority_rrs",
        H_AUTHORITY,
        response.name_servers().len() as f64,
    );
    rec.set(
        "probe_dns_additional_rrs",
        H_ADDITIONAL,
        response.additionals().len() as f64,
    );
    rec.set("probe_dns_query_succeeded", H_SUCCEEDED, 1.0);
    if cfg.query_type == hickory_proto::rr::RecordType::SOA
        && let Some(serial) = response.answers().iter().find_map(|r| match r.data() {
            RData::SOA(soa) => Some(soa.serial()),
            _ => None,
        })
    {
        rec.set(
            "probe_dns_serial",
            "Returns the serial number of the zone",
            f64::from(serial),
        );
    }
}

/// The module's `valid_rcodes` and `validate_*_rrs` checks of the answer.
fn check_response(
    cfg: &DnsProbe,
    response: &Message,
    rcode: u16,
    rcode_text: &str,
) -> Result<(), Failure> {
    if !cfg.valid_rcodes.contains(&rcode) {
        let reason = match rcode_text {
            "NXDOMAIN" => "nxdomain".to_string(),
            "SERVFAIL" => "servfail".to_string(),
            "REFUSED" => "refused".to_string(),
            other => format!("rcode_{}", other.to_ascii_lowercase()),
        };
        return Err(Failure::new(
            &reason,
            format!("rcode {rcode_text} is not one of the valid_rcodes"),
        ));
    }
    for (section, records, validator, why) in [
        (
            "answer",
            response.answers(),
            &cfg.validate_answer_rrs,
            reason::ANSWER_VALIDATION,
        ),
        (
            "authority",
            response.name_servers(),
            &cfg.validate_authority_rrs,
            reason::AUTHORITY_VALIDATION,
        ),
        (
            "additional",
            response.additionals(),
            &cfg.validate_additional_rrs,
            reason::ADDITIONAL_VALIDATION,
        ),
    ] {
        if let Err(message) = validate(records, validator) {
            return Err(Failure::new(
                why,
                format!("{section} RRs validation failed: {message}"),
            ));
        }
    }
    Ok(())
}

fn record_phase(rec: &mut Recorder, phase: &str, d: Duration) {
    rec.set_labeled(
        "probe_dns_duration_seconds",
        H_PHASE,
        &[("phase", phase)],
        d.as_secs_f64(),
    );
}

/// Sends a length-prefixed query on a stream and reads the length-prefixed answer.
async fn exchange_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    wire: &[u8],
) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(wire.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too large"))?;
    let mut framed = Vec::with_capacity(wire.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(wire);
    stream.write_all(&framed).await?;
    stream.flush().await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

/// A record as miekg/dns prints it: `name\tttl\tclass\ttype\tdata`.
pub(crate) fn record_text(r: &Record) -> String {
    let data = match r.data() {
        RData::TXT(txt) => txt_text(txt.txt_data()),
        other => other.to_string(),
    };
    format!(
        "{}\t{}\t{}\t{}\t{data}",
        r.name(),
        r.ttl(),
        r.dns_class(),
        r.record_type(),
    )
}

/// TXT data as miekg/dns prints it: each string in double quotes, separated by a space,
/// with `"` and `\` escaped by a backslash and bytes outside printable ASCII as `\DDD`.
fn txt_text(strings: &[Box<[u8]>]) -> String {
    let mut out = String::new();
    for (i, s) in strings.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push('"');
        for &b in s.iter() {
            match b {
                b'"' | b'\\' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                b' '..=b'~' => out.push(char::from(b)),
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('"');
    }
    out
}

/// blackbox_exporter's `validRRs`.
fn validate(records: &[Record], v: &RrValidator) -> Result<(), String> {
    if records.is_empty() && !v.fail_if_not_matches_regexp.is_empty() {
        return Err("fail_if_not_matches_regexp specified but no RRs returned".into());
    }
    if records.is_empty() && !v.fail_if_none_matches_regexp.is_empty() {
        return Err("fail_if_none_matches_regexp specified but no RRs returned".into());
    }
    let mut any_match = false;
    let mut all_match = true;
    for r in records {
        let text = record_text(r);
        for re in &v.fail_if_matches_regexp {
            if re.is_match(&text) {
                return Err(format!(
                    "{text:?} matched fail_if_matches_regexp {:?}",
                    re.as_str()
                ));
            }
        }
        for re in &v.fail_if_all_match_regexp {
            if !re.is_match(&text) {
                all_match = false;
            }
        }
        for re in &v.fail_if_not_matches_regexp {
            if !re.is_match(&text) {
                return Err(format!(
                    "{text:?} did not match fail_if_not_matches_regexp {:?}",
                    re.as_str()
                ));
            }
        }
        for re in &v.fail_if_none_matches_regexp {
            if re.is_match(&text) {
                any_match = true;
            }
        }
    }
    // As blackbox_exporter's code (whatever the option's name suggests): the probe fails
    // when some RR does not match; no RRs at all pass.
    if !v.fail_if_all_match_regexp.is_empty() && !all_match {
        return Err("not all RRs matched fail_if_all_match_regexp".into());
    }
    if !v.fail_if_none_matches_regexp.is_empty() && !any_match {
        return Err("no RR matched fail_if_none_matches_regexp".into());
    }
    Ok(())
}

/// A query id that is hard to guess (std's randomly seeded hasher, plus the clock).
pub(crate) fn random_u16() -> u16 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::TXT;

    fn txt(strings: &[&[u8]]) -> String {
        let record = Record::from_rdata(
            Name::from_ascii("t.example.").expect("name"),
            60,
            RData::TXT(TXT::from_bytes(strings.to_vec())),
        );
        record_text(&record)
    }

    #[test]
    fn txt_records_print_as_miekg_dns() {
        assert_eq!(
            txt(&[b"v=spf1 -all"]),
            "t.example.\t60\tIN\tTXT\t\"v=spf1 -all\""
        );
        assert_eq!(
            txt(&[b"hello", b"world"]),
            "t.example.\t60\tIN\tTXT\t\"hello\" \"world\""
        );
        assert_eq!(
            txt(&[b"say \"hi\" \\o/", b"\x01\xff"]),
            "t.example.\t60\tIN\tTXT\t\"say \\\"hi\\\" \\\\o/\" \"\\001\\255\""
        );
    }

    #[test]
    fn fail_if_all_match_fails_when_some_rr_does_not_match_as_blackbox() {
        let v = |re: &str| RrValidator {
            fail_if_all_match_regexp: vec![regex::Regex::new(re).expect("regex")],
            ..RrValidator::default()
        };
        let a = Record::from_rdata(
            Name::from_ascii("a.example.").expect("name"),
            0,
            RData::A("192.0.2.1".parse().expect("ip")),
        );
        let aaaa = Record::from_rdata(
            Name::from_ascii("a.example.").expect("name"),
            0,
            RData::AAAA("2001:db8::1".parse().expect("ip")),
        );
        assert!(validate(&[a.clone(), aaaa], &v(r"192\.0\.2\.1")).is_err());
        assert!(validate(std::slice::from_ref(&a), &v(r"192\.0\.2\.1")).is_ok());
        assert!(validate(&[], &v(".*")).is_ok());
    }
}
