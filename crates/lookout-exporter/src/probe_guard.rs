//! Who may be probed through `/probe`: an opt-in guard against using the exporter as an open
//! proxy (the server-side request forgery discussed for blackbox_exporter, CVE-2020-16248).
//!
//! ```yaml
//! probe_policy:
//!   # Ad-hoc /probe targets must match one of these: host patterns (exact names, or
//!   # `*.example.internal` for any name under that domain) and CIDRs (`10.0.0.0/8`,
//!   # `127.0.0.1/32`, `::1/128`; a bare IP is a single address). Unset or empty: any.
//!   allowed_targets: ["*.example.internal", "10.0.0.0/8", "127.0.0.1/32"]
//!   # Refuse every /probe target that is not the `target:` of a configured target.
//!   refuse_unconfigured: true
//!   # Unix socket paths that /probe may be asked to probe with a `unix` module (exact
//!   # paths, as written in ?target=). Unset or empty: none.
//!   allowed_unix_sockets: ["/run/app/health.sock"]
//! ```
//!
//! Rules:
//!
//! * A `/probe` target written exactly as the `target:` of an entry under `targets:` is
//!   always allowed: the operator configured it.
//! * With `refuse_unconfigured: true`, every other target is refused (reason
//!   `unconfigured`).
//! * A unix socket path (a module with `prober: unix`) is refused unless it is written
//!   exactly as one of `allowed_unix_sockets` (reason `unix_socket`), **even with no
//!   policy at all**: a path reaches what the network cannot (the docker or containerd
//!   socket, a database's local socket, the exporter's own), so `/probe` may not name one
//!   by default. The comparison is on the text, so `/run/../run/x.sock` does not pass for
//!   `/run/x.sock`; list the paths as the targets will write them.
//! * Otherwise, when `allowed_targets` is set, the target's host — parsed by
//!   [`crate::target`], the parser the module's prober uses, so both read the same host —
//!   must match on arrival: a literal IP must lie in one of the CIDRs; a name must match a
//!   host pattern, or else every address it resolves to must lie in one of the CIDRs
//!   (reason `not_allowed`, 403 before any probe).
//! * Then, where the connection is made ([`ProbePolicy::check_address`], called by the
//!   probers' resolver for the target, every HTTP redirect hop and every address they
//!   connect to): the name connected to must match a host pattern, or the address itself
//!   must lie in a CIDR. A redirect to a disallowed host, or a name whose answer changed
//!   since the check on arrival (DNS rebinding), ends the probe with reason `not_allowed`
//!   and the request gets 403 too.
//!
//! A refused request gets `403` with the reason and counts in
//! `lookout_exporter_probe_requests_refused_total{reason}`.
//!
//! What remains trusted: a name that matches a host pattern is allowed whatever it resolves
//! to — allow names by pattern only for domains whose DNS you control.

use std::net::IpAddr;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::config::ProberKind;

/// An IP network (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::/n` or a bare address.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid CIDR {text:?}: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid CIDR {text:?}: prefix must be 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One `allowed_targets` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// A network; literal IPs and resolved addresses are checked against it.
    Network(Cidr),
    /// A host name, lower case; `*.domain` matches any name under `domain`.
    Host(String),
}

impl Allowed {
    fn parse(text: &str) -> Result<Allowed, String> {
        let t = text.trim();
        if t.contains('/') || t.parse::<IpAddr>().is_ok() {
            return Cidr::parse(t).map(Allowed::Network);
        }
        let name = t.trim_end_matches('.').to_ascii_lowercase();
        let body = name.strip_prefix("*.").unwrap_or(&name);
        if body.is_empty()
            || !body.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            })
        {
            return Err(format!(
                "invalid allowed target {text:?}: use a host name, *.domain, an IP address or a CIDR"
            ));
        }
        Ok(Allowed::Host(name))
    }

    fn matches_name(&self, name: &str) -> bool {
        match self {
            Allowed::Host(pattern) => match pattern.strip_prefix("*.") {
                Some(domain) => name
                    .strip_suffix(domain)
                    .is_some_and(|head| head.ends_with('.') && head.len() > 1),
                None => pattern == name,
            },
            Allowed::Network(_) => false,
        }
    }
}

impl<'de> Deserialize<'de> for Allowed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Allowed::parse(&s).map_err(de::Error::custom)
    }
}

/// `probe_policy:` in the exporter configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbePolicy {
    /// Host patterns and CIDRs ad-hoc `/probe` targets must match; empty allows any.
    pub allowed_targets: Vec<Allowed>,
    /// Refuse `/probe` targets that are not a configured target's `target:`.
    pub refuse_unconfigured: bool,
    /// Unix socket paths `/probe` may probe (exact text); none by default.
    #[serde(deserialize_with = "socket_paths")]
    pub allowed_unix_sockets: Vec<String>,
}

fn socket_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let paths = Vec::<String>::deserialize(d)?;
    match paths
        .iter()
        .find(|p| crate::target::unix_path(p).is_err() || !p.starts_with('/'))
    {
        Some(p) => Err(de::Error::custom(format!(
            "invalid allowed unix socket {p:?}: use an absolute path of at most 107 bytes"
        ))),
        None => Ok(paths),
    }
}

/// Why a `/probe` target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a configured target and `refuse_unconfigured` is on.
    Unconfigured,
    /// Outside `allowed_targets`; the message says why.
    NotAllowed(String),
    /// A unix socket path not in `allowed_unix_sockets`.
    UnixSocket,
}

impl Refusal {
    /// The `reason` label of the refusal counter.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Unconfigured => "unconfigured",
            Refusal::NotAllowed(_) => "not_allowed",
            Refusal::UnixSocket => "unix_socket",
        }
    }

    /// The body of the `403` answer.
    pub fn message(&self, target: &str) -> String {
        match self {
            Refusal::Unconfigured => format!(
                "Target {target:?} refused: only configured targets may be probed (probe_policy.refuse_unconfigured)\n"
            ),
            Refusal::NotAllowed(why) => {
                format!("Target {target:?} refused: {why} (probe_policy.allowed_targets)\n")
            }
            Refusal::UnixSocket => format!(
                "Target {target:?} refused: a unix socket may be probed only when it is a \
                 configured target or listed in probe_policy.allowed_unix_sockets\n"
            ),
        }
    }
}

impl ProbePolicy {
    /// Whether the policy restricts anything.
    pub fn is_active(&self) -> bool {
        self.refuse_unconfigured || !self.allowed_targets.is_empty()
    }

    /// Checks a `/probe` target on arrival, read as the prober of `kind` reads it;
    /// `configured` says whether it is exactly a configured target's `target:`.
    pub async fn check(
        &self,
        target: &str,
        kind: ProberKind,
        configured: bool,
    ) -> Result<(), Refusal> {
        if configured {
            return Ok(());
        }
        if self.refuse_unconfigured {
            return Err(Refusal::Unconfigured);
        }
        if kind == ProberKind::Unix {
            return match self.allowed_unix_sockets.iter().any(|p| p == target) {
                true => Ok(()),
                false => Err(Refusal::UnixSocket),
            };
        }
        if !self.is_active() {
            return Ok(());
        }
        let host = crate::target::host(kind, target)
            .map_err(|e| Refusal::NotAllowed(format!("no host in target: {e}")))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check_address(&host, ip).map_err(Refusal::NotAllowed);
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Err(Refusal::NotAllowed("no host in target".into()));
        }
        if self.allowed_targets.iter().any(|a| a.matches_name(&name)) {
            return Ok(());
        }
        if !self.has_networks() {
            return Err(Refusal::NotAllowed(format!(
                "host {name:?} matches no allowed host pattern"
            )));
        }
        let addresses: Vec<IpAddr> = match tokio::net::lookup_host((name.as_str(), 0)).await {
            Ok(found) => found.map(|a| a.ip()).collect(),
            Err(e) => {
                return Err(Refusal::NotAllowed(format!(
                    "host {name:?} could not be resolved to check it: {e}"
                )));
            }
        };
        if addresses.is_empty() {
            return Err(Refusal::NotAllowed(format!(
                "host {name:?} resolves to no address"
            )));
        }
        addresses
            .iter()
            .try_for_each(|ip| self.check_address(&name, *ip))
            .map_err(Refusal::NotAllowed)
    }

    fn has_networks(&self) -> bool {
        self.allowed_targets
            .iter()
            .any(|a| matches!(a, Allowed::Network(_)))
    }

    /// Checks a host that is not resolved here (an HTTP probe through a proxy with
    /// `skip_resolve_phase_with_proxy`: the proxy resolves it): a literal address must lie in
    /// an allowed network; a name must match an allowed host pattern, since the networks it
    /// would resolve to cannot be checked.
    pub fn check_unresolved(&self, host: &str) -> Result<(), String> {
        if self.allowed_targets.is_empty() {
            return Ok(());
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return self.check_address(bare, ip);
        }
        let name = bare.trim_end_matches('.').to_ascii_lowercase();
        if self.allowed_targets.iter().any(|a| a.matches_name(&name)) {
            return Ok(());
        }
        Err(format!(
            "host {name:?} matches no allowed host pattern, and it is not resolved here to be checked against the allowed networks (skip_resolve_phase_with_proxy: the proxy resolves it)"
        ))
    }

    /// Whether a probe may connect to `ip`, which it found for `host` (a name or the
    /// literal address): the name matches a host pattern, or the address lies in an
    /// allowed network. An empty `allowed_targets` allows any. The error says why not.
    pub fn check_address(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        if self.allowed_targets.is_empty() {
            return Ok(());
        }
        let literal = host.parse::<IpAddr>().is_ok();
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if !literal && self.allowed_targets.iter().any(|a| a.matches_name(&name)) {
            return Ok(());
        }
        let in_network = self.allowed_targets.iter().any(|a| match a {
            Allowed::Network(n) => n.contains(ip),
            Allowed::Host(_) => false,
        });
        match (in_network, literal) {
            (true, _) => Ok(()),
            (false, true) => Err(format!("{ip} is in no allowed network")),
            (false, false) => Err(format!(
                "host {name:?} resolves to {ip}, which is in no allowed network"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], refuse: bool) -> ProbePolicy {
        ProbePolicy {
            allowed_targets: allowed.iter().map(|a| Allowed::parse(a).unwrap()).collect(),
            refuse_unconfigured: refuse,
            allowed_unix_sockets: Vec::new(),
        }
    }

    #[test]
    fn cidrs_contain_what_they_should() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("127.0.0.1")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert!(
            !Cidr::parse("127.0.0.1")
                .unwrap()
                .contains("127.0.0.2".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Allowed::parse("bad host!").is_err());
    }

    #[tokio::test]
    async fn allow_list_and_refusal_of_unconfigured_targets() {
        let p = policy(&["*.example.internal", "10.0.0.0/8", "127.0.0.1/32"], false);
        let http = |t: &'static str| p.check(t, ProberKind::Http, false);
        assert!(http("http://api.example.internal/health").await.is_ok());
        assert!(http("http://a.b.EXAMPLE.internal./").await.is_ok());
        assert_eq!(
            http("http://example.internal/")
                .await
                .map_err(|r| r.reason()),
            Err("not_allowed")
        );
        assert!(p.check("10.9.8.7:22", ProberKind::Tcp, false).await.is_ok());
        assert!(http("http://127.0.0.1:9115/metrics").await.is_ok());
        let refused = http("http://169.254.169.254/latest/meta-data").await;
        assert_eq!(refused.map_err(|r| r.reason()), Err("not_allowed"));
        // The host is the one the prober connects to, not the bracketed text.
        for sneaky in [
            "[127.0.0.1]@127.0.0.2:18999",
            "[api.example.internal]@127.0.0.2:18999",
            "127.0.0.1@127.0.0.2:18999",
            "api.example.internal@127.0.0.2:18999",
        ] {
            assert!(http(sneaky).await.is_err(), "{sneaky}");
        }
        assert!(
            p.check("[127.0.0.1]@127.0.0.2:1", ProberKind::Tcp, false)
                .await
                .is_err()
        );
        // A configured target is always allowed.
        assert!(
            p.check("http://169.254.169.254/", ProberKind::Http, true)
                .await
                .is_ok()
        );
        // Unix sockets: only configured or listed paths, with or without a policy.
        let none = ProbePolicy::default();
        let docker = "/var/run/docker.sock";
        assert_eq!(
            none.check(docker, ProberKind::Unix, false).await,
            Err(Refusal::UnixSocket)
        );
        assert!(none.check(docker, ProberKind::Unix, true).await.is_ok());
        let open = ProbePolicy {
            allowed_unix_sockets: vec!["/run/ok.sock".into()],
            ..ProbePolicy::default()
        };
        assert!(
            open.check("/run/ok.sock", ProberKind::Unix, false)
                .await
                .is_ok()
        );
        let sneaky = open.check("/run/../run/ok.sock", ProberKind::Unix, false);
        assert_eq!(sneaky.await, Err(Refusal::UnixSocket));
        let strict = policy(&[], true);
        assert_eq!(
            strict
                .check("http://127.0.0.1/", ProberKind::Http, false)
                .await,
            Err(Refusal::Unconfigured)
        );
        assert!(strict.check("x:1", ProberKind::Tcp, true).await.is_ok());
        // No policy: anything goes.
        assert!(
            ProbePolicy::default()
                .check("http://169.254.169.254/", ProberKind::Http, false)
                .await
                .is_ok()
        );
    }

    #[test]
    fn addresses_are_checked_with_the_name_they_came_from() {
        let p = policy(&["*.example.internal", "127.0.0.1/32"], false);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.check_address("127.0.0.1", ip("127.0.0.1")).is_ok());
        assert!(p.check_address("127.0.0.2", ip("127.0.0.2")).is_err());
        assert!(
            p.check_address("a.example.internal", ip("127.0.0.2"))
                .is_ok()
        );
        let err = p.check_address("localhost", ip("::1")).unwrap_err();
        assert!(err.contains("resolves to ::1"), "{err}");
        assert!(ProbePolicy::default().check_address("x", ip("::1")).is_ok());
    }
}
