//! Resolving a target's host the way blackbox_exporter's `chooseProtocol` does: a timed
//! lookup that prefers one IP family and may fall back to the other. Literal addresses skip
//! the lookup. The address chosen is the one the prober connects to, so this is where a
//! `/probe` request's `probe_policy.allowed_targets` is enforced (reason `not_allowed`):
//! for the target, every redirect hop and every retry, whatever the text of the target
//! said and whatever the name resolved to when the request came in. Records `probe_dns_lookup_time_seconds`, `probe_ip_protocol` and
//! `probe_ip_addr_hash`.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;

use super::{Failure, Recorder, reason};
use crate::config::IpProtocol;
use crate::probe_guard::ProbePolicy;

/// The process-wide resolver: the system's configuration (`/etc/resolv.conf`, `/etc/hosts`)
/// asking for both families at once, so that one lookup serves preference and fallback.
fn resolver() -> &'static TokioResolver {
    static RESOLVER: OnceLock<TokioResolver> = OnceLock::new();
    RESOLVER.get_or_init(|| {
        let mut builder = match TokioResolver::builder_tokio() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(
                    "cannot read the system resolver configuration ({e}); resolving names with no nameserver, only /etc/hosts"
                );
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], vec![]),
                    TokioConnectionProvider::default(),
                )
            }
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Always;
        // The probe's deadline bounds the lookup; the cache would hide lookup times.
        opts.cache_size = 0;
        builder.build()
    })
}

/// Resolves `host` (a name or a literal address) honouring the preferred protocol and
/// fallback, and records the lookup metrics. Returns the address and the lookup time, or
/// `not_allowed` when `policy` does not allow connecting to that address.
///
/// As blackbox_exporter (Go's resolver with `hosts: files dns`): a name listed in the hosts
/// file resolves to the addresses listed there only, so `localhost` is `127.0.0.1` where the
/// file says so, not `::1`; a literal address of the other family is refused when
/// `ip_protocol_fallback` is false. A failed lookup still publishes `probe_ip_protocol` and
/// `probe_ip_addr_hash` as 0.
pub(crate) async fn resolve_target(
    rec: &mut Recorder,
    host: &str,
    preferred: IpProtocol,
    fallback: bool,
    policy: Option<&ProbePolicy>,
) -> Result<(IpAddr, Duration), Failure> {
    let start = Instant::now();
    let result = choose_address(rec, host, preferred, fallback).await;
    let elapsed = start.elapsed();
    record_lookup(rec, elapsed);
    let ip = match result.and_then(|ip| match policy {
        Some(policy) => policy
            .check_address(host, ip)
            .map(|()| ip)
            .map_err(|why| Failure::new(reason::NOT_ALLOWED, why)),
        None => Ok(ip),
    }) {
        Ok(ip) => ip,
        Err(failure) => {
            record_address(rec, None);
            return Err(failure);
        }
    };
    record_address(rec, Some(ip));
    rec.log(format!("Resolved target address: target={host} ip={ip}"));
    Ok((ip, elapsed))
}

/// The address to probe for `host`: a literal, else the hosts file, else DNS.
async fn choose_address(
    rec: &mut Recorder,
    host: &str,
    preferred: IpProtocol,
    fallback: bool,
) -> Result<IpAddr, Failure> {
    let want6 = preferred == IpProtocol::Ip6;
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let ips: Vec<IpAddr> = match literal {
        Some(ip) => vec![ip],
        None => {
            rec.log(format!(
                "Resolving target address: target={host} ip_protocol={preferred:?}"
            ));
            match hosts_file_addresses(host) {
                Some(ips) => ips,
                None => match resolver().lookup_ip(host).await {
                    Ok(l) => l.iter().collect(),
                    Err(e) if e.is_no_records_found() => Vec::new(),
                    Err(e) => {
                        return Err(Failure::new(
                            reason::DNS_RESOLUTION,
                            format!("error resolving address {host:?}: {e}"),
                        ));
                    }
                },
            }
        }
    };
    let preferred_ip = ips.iter().find(|ip| ip.is_ipv6() == want6).copied();
    let other_ip = ips.iter().find(|ip| ip.is_ipv6() != want6).copied();
    match (preferred_ip, other_ip) {
        (Some(ip), _) => Ok(ip),
        (None, Some(ip)) if fallback => {
            rec.log(format!(
                "No {preferred:?} address for {host}, falling back to {ip}"
            ));
            Ok(ip)
        }
        _ => {
            let family = if want6 { "IPv6" } else { "IPv4" };
            let why = if ips.is_empty() || !fallback {
                format!("no {family} address found for {host:?}")
            } else {
                format!("no {family} address found for {host:?} and ip_protocol_fallback is false")
            };
            Err(Failure::new(reason::DNS_RESOLUTION, why))
        }
    }
}

/// `probe_ip_protocol` and `probe_ip_addr_hash` (both 0 when nothing was resolved). The
/// hash is FNV-1a over the address bytes as Go holds them: 4 bytes for IPv4, 16 for IPv6.
fn record_address(rec: &mut Recorder, ip: Option<IpAddr>) {
    let (protocol, hash) = match ip {
        None => (0.0, 0.0),
        Some(IpAddr::V4(v4)) => (4.0, f64::from(fnv32a(&v4.octets()))),
        Some(IpAddr::V6(v6)) => (6.0, f64::from(fnv32a(&v6.octets()))),
    };
    rec.set(
        "probe_ip_protocol",
        "Specifies whether probe ip protocol is IP4 or IP6",
        protocol,
    );
    rec.set(
        "probe_ip_addr_hash",
        "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
        hash,
    );
}

/// Largest hosts file read; a larger one is ignored (names then go to DNS).
const MAX_HOSTS_FILE_BYTES: u64 = 1 << 20;

/// The addresses the hosts file lists for `host` (case-insensitively), or `None` when it
/// lists none, as Go's resolver reads `/etc/hosts` before asking DNS.
fn hosts_file_addresses(host: &str) -> Option<Vec<IpAddr>> {
    use std::io::Read;
    let file = std::fs::File::open("/etc/hosts").ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_HOSTS_FILE_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    let host = host.trim_end_matches('.');
    let ips: Vec<IpAddr> = text
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let ip: IpAddr = fields.next()?.split('%').next()?.parse().ok()?;
            fields
                .any(|name| name.trim_end_matches('.').eq_ignore_ascii_case(host))
                .then_some(ip)
        })
        .collect();
    (!ips.is_empty()).then_some(ips)
}

fn record_lookup(rec: &mut Recorder, elapsed: Duration) {
    rec.set(
        "probe_dns_lookup_time_seconds",
        "Returns the time taken for probe dns lookup in seconds",
        elapsed.as_secs_f64(),
    );
}

/// 32-bit FNV-1a, the hash blackbox_exporter publishes as `probe_ip_addr_hash`.
pub(crate) fn fnv32a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_values() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar"), 0xbf9c_f968);
    }
}
