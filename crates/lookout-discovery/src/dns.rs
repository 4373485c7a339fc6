//! `dns_sd_configs`: targets from DNS SRV, A or AAAA records, as Prometheus's
//! `discovery/dns`.
//!
//! Every `refresh_interval` (default 30s) each name is looked up with the system's resolver
//! configuration (or [`DiscoveryOptions::dns_servers`]). SRV records give
//! `target:port` addresses (the target without its final dot) and
//! `__meta_dns_srv_record_target` (with it) / `__meta_dns_srv_record_port`; A and AAAA
//! records give `address:port` with the configured `port`. Every target has
//! `__meta_dns_name`. One group per name, its source the name. A failed lookup keeps that
//! name's last good group and counts in `prometheus_sd_dns_lookup_failures_total`. `MX`
//! (and `NS`) records are not supported.

use std::net::IpAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use serde::Deserialize;

use crate::{DiscoveryOptions, SdDuration, Sink, TargetGroup, join_host_port};

/// Prometheus's default `refresh_interval` for DNS SD.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// The record type to query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum RecordType {
    /// SRV records (the default).
    #[default]
    #[serde(rename = "SRV")]
    Srv,
    /// IPv4 addresses.
    A,
    /// IPv6 addresses.
    #[serde(rename = "AAAA")]
    Aaaa,
}

/// One `dns_sd_configs` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSdConfig {
    /// The names to look up.
    pub names: Vec<String>,
    /// The record type (default SRV).
    #[serde(default, rename = "type")]
    pub kind: RecordType,
    /// The port of A and AAAA targets (required for them; ignored for SRV).
    #[serde(default)]
    pub port: u16,
    /// Refresh interval (default 30s).
    #[serde(default)]
    pub refresh_interval: Option<SdDuration>,
}

impl DnsSdConfig {
    /// The effective refresh interval.
    pub fn refresh(&self) -> Duration {
        self.refresh_interval
            .map_or(DEFAULT_REFRESH_INTERVAL, |d| d.0)
    }

    /// Checks the settings as Prometheus does.
    pub fn validate(&self) -> Result<(), String> {
        if self.names.is_empty() {
            return Err("DNS-SD config must contain at least one SRV record name".into());
        }
        if self.kind != RecordType::Srv && self.port == 0 {
            return Err(
                "a port is required in DNS-SD configs for all record types except SRV".into(),
            );
        }
        Ok(())
    }
}

/// A resolver using `servers` (plain UDP/TCP) or, when empty, the system configuration.
pub fn resolver(servers: &[std::net::SocketAddr]) -> TokioResolver {
    let mut builder = if servers.is_empty() {
        TokioResolver::builder_tokio().unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read the system resolver configuration ({e}); DNS-SD has no nameserver"
            );
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], vec![]),
                TokioConnectionProvider::default(),
            )
        })
    } else {
        let mut group = NameServerConfigGroup::new();
        for s in servers {
            group.merge(NameServerConfigGroup::from_ips_clear(
                &[s.ip()],
                s.port(),
                true,
            ));
        }
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], group),
            TokioConnectionProvider::default(),
        )
    };
    // Each refresh asks again, as Prometheus does.
    builder.options_mut().cache_size = 0;
    builder.build()
}

/// Looks up one name and builds its group.
pub async fn lookup(
    resolver: &TokioResolver,
    cfg: &DnsSdConfig,
    name: &str,
    max_targets: usize,
) -> Result<TargetGroup, String> {
    let mut targets = Vec::new();
    let mut add = |address: String, srv: Option<(String, u16)>| {
        let mut t = std::collections::BTreeMap::from([
            ("__address__".to_string(), address),
            ("__meta_dns_name".to_string(), name.to_string()),
        ]);
        if let Some((target, port)) = srv {
            t.insert("__meta_dns_srv_record_target".into(), target);
            t.insert("__meta_dns_srv_record_port".into(), port.to_string());
        }
        targets.push(t);
    };
    match cfg.kind {
        RecordType::Srv => {
            let l = match resolver.srv_lookup(name).await {
                Ok(l) => l.iter().cloned().collect(),
                Err(e) if e.is_no_records_found() => Vec::new(),
                Err(e) => return Err(e.to_string()),
            };
            for srv in &l {
                let mut fqdn = srv.target().to_string();
                if !fqdn.ends_with('.') {
                    fqdn.push('.');
                }
                let host = fqdn.trim_end_matches('.').to_string();
                add(join_host_port(&host, srv.port()), Some((fqdn, srv.port())));
            }
        }
        RecordType::A => {
            let l = match resolver.ipv4_lookup(name).await {
                Ok(l) => l.iter().copied().collect(),
                Err(e) if e.is_no_records_found() => Vec::new(),
                Err(e) => return Err(e.to_string()),
            };
            for a in l {
                add(join_host_port(&IpAddr::V4(a.0).to_string(), cfg.port), None);
            }
        }
        RecordType::Aaaa => {
            let l = match resolver.ipv6_lookup(name).await {
                Ok(l) => l.iter().copied().collect(),
                Err(e) if e.is_no_records_found() => Vec::new(),
                Err(e) => return Err(e.to_string()),
            };
            for a in l {
                add(join_host_port(&IpAddr::V6(a.0).to_string(), cfg.port), None);
            }
        }
    }
    if targets.len() > max_targets {
        return Err(format!(
            "{} records, more than the limit of {max_targets} per source",
            targets.len()
        ));
    }
    Ok(TargetGroup {
        source: name.to_string(),
        targets,
        labels: Default::default(),
    })
}

pub(crate) async fn run(cfg: DnsSdConfig, options: DiscoveryOptions, sink: Sink) {
    let resolver = resolver(&options.dns_servers);
    let mut last: Vec<Option<TargetGroup>> = vec![None; cfg.names.len()];
    loop {
        for (i, name) in cfg.names.iter().enumerate() {
            sink.metrics.dns_lookups.inc();
            match lookup(&resolver, &cfg, name, options.max_targets_per_source).await {
                Ok(g) => last[i] = Some(g),
                Err(e) => {
                    sink.metrics.dns_failures.inc();
                    tracing::error!(name = %name, error = %e, "DNS resolution failed; keeping the last good targets");
                }
            }
        }
        sink.publish(last.iter().flatten().cloned().collect());
        tokio::time::sleep(cfg.refresh()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dnsmasq on a loopback port serving SRV and A records; None when dnsmasq is missing.
    fn dnsmasq() -> Option<(std::process::Child, std::net::SocketAddr)> {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--user=root",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={port}"),
                "--srv-host=_web._tcp.lookout.test,web1.lookout.test,8080,0,10",
                "--srv-host=_web._tcp.lookout.test,web2.lookout.test,8081,0,20",
                "--host-record=web1.lookout.test,127.0.0.11",
                "--host-record=web2.lookout.test,127.0.0.12",
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        answers(addr);
        Some((child, addr))
    }

    /// Waits (at most 10 s) until a DNS server answers on `addr`: dnsmasq binds its port a
    /// moment after it starts, later on a busy machine.
    fn answers(addr: std::net::SocketAddr) {
        // A query for `lookout.test` A, recursion desired.
        let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        query.extend_from_slice(b"\x07lookout\x04test\x00\x00\x01\x00\x01");
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout");
        let mut buf = [0u8; 512];
        for _ in 0..100 {
            // Refused (nothing bound yet) comes back as an error of the send or the read.
            if socket.send_to(&query, addr).is_ok() && socket.recv_from(&mut buf).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dnsmasq did not answer on {addr} within 10 s");
    }

    #[tokio::test]
    async fn srv_and_a_records_with_prometheus_meta_labels() {
        let Some((mut child, addr)) = dnsmasq() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "dnsmasq is not installed, and CI needs it (scripts/install-test-deps.sh)"
            );
            eprintln!("dnsmasq not available; skipped");
            return;
        };
        let r = resolver(&[addr]);
        let srv = DnsSdConfig {
            names: vec!["_web._tcp.lookout.test".into()],
            kind: RecordType::Srv,
            port: 0,
            refresh_interval: None,
        };
        let g = lookup(&r, &srv, "_web._tcp.lookout.test", 10).await;
        let a = DnsSdConfig {
            names: vec!["web1.lookout.test".into()],
            kind: RecordType::A,
            port: 9100,
            refresh_interval: None,
        };
        let ga = lookup(&r, &a, "web1.lookout.test", 10).await;
        let missing = lookup(&r, &a, "nothing.lookout.test", 10).await;
        let _ = child.kill();
        let _ = child.wait();
        let g = g.unwrap();
        let mut addrs: Vec<_> = g.targets.iter().map(|t| t["__address__"].clone()).collect();
        addrs.sort();
        assert_eq!(addrs, ["web1.lookout.test:8080", "web2.lookout.test:8081"]);
        let t1 = g
            .targets
            .iter()
            .find(|t| t["__address__"] == "web1.lookout.test:8080")
            .unwrap();
        assert_eq!(t1["__meta_dns_name"], "_web._tcp.lookout.test");
        assert_eq!(t1["__meta_dns_srv_record_target"], "web1.lookout.test.");
        assert_eq!(t1["__meta_dns_srv_record_port"], "8080");
        let ga = ga.unwrap();
        assert_eq!(ga.targets[0]["__address__"], "127.0.0.11:9100");
        assert_eq!(ga.targets[0]["__meta_dns_name"], "web1.lookout.test");
        assert!(!ga.targets[0].contains_key("__meta_dns_srv_record_target"));
        assert!(missing.unwrap().targets.is_empty());
        assert!(a.validate().is_ok());
        assert!(DnsSdConfig { port: 0, ..a }.validate().is_err());
    }
}
