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
pub(crate) async fn resolve_target(
    rec: &mut Recorder,
    host: &str,
    preferred: IpProtocol,
    fallback: bool,
    policy: Option<&ProbePolicy>,
) -> Result<(IpAddr, Duration), Failure> {
    let start = Instant::now();
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok();
    let ip = match literal {
        Some(ip) => ip,
        None => {
            rec.log(format!(
                "Resolving target address: target={host} ip_protocol={preferred:?}"
            ));
            let lookup = resolver().lookup_ip(host).await;
            let ips: Vec<IpAddr> = match lookup {
                Ok(l) => l.iter().collect(),
                Err(e) if e.is_no_records_found() => Vec::new(),
                Err(e) => {
                    record_lookup(rec, start.elapsed());
                    return Err(Failure::new(
                        reason::DNS_RESOLUTION,
                        format!("error resolving address {host:?}: {e}"),
                    ));
                }
            };
            let want6 = preferred == IpProtocol::Ip6;
            let preferred_ip = ips.iter().find(|ip| ip.is_ipv6() == want6).copied();
            let other_ip = ips.iter().find(|ip| ip.is_ipv6() != want6).copied();
            match (preferred_ip, other_ip) {
                (Some(ip), _) => ip,
                (None, Some(ip)) if fallback => {
                    rec.log(format!(
                        "No {preferred:?} address for {host}, falling back to {ip}"
                    ));
                    ip
                }
                _ => {
                    record_lookup(rec, start.elapsed());
                    let family = if want6 { "IPv6" } else { "IPv4" };
                    let why = if ips.is_empty() || !fallback {
                        format!("no {family} address found for {host:?}")
                    } else {
                        format!(
                            "no {family} address found for {host:?} and ip_protocol_fallback is false"
                        )
                    };
                    return Err(Failure::new(reason::DNS_RESOLUTION, why));
                }
            }
        }
    };
    let elapsed = start.elapsed();
    record_lookup(rec, elapsed);
    if let Some(policy) = policy {
        policy
            .check_address(host, ip)
            .map_err(|why| Failure::new(reason::NOT_ALLOWED, why))?;
    }
    rec.set(
        "probe_ip_protocol",
        "Specifies whether probe ip protocol is IP4 or IP6",
        if ip.is_ipv6() { 6.0 } else { 4.0 },
    );
    rec.set(
        "probe_ip_addr_hash",
        "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
        f64::from(fnv32a(ip.to_string().as_bytes())),
    );
    rec.log(format!("Resolved target address: target={host} ip={ip}"));
    Ok((ip, elapsed))
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
