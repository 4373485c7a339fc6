//! The resolve and connect phases of one request: directly to the target, or through a
//! proxy ([`super::proxy`]).
//!
//! With a proxy, the target is still resolved (and its `probe_ip_*` metrics recorded) unless
//! `skip_resolve_phase_with_proxy` is set, as in blackbox_exporter; the proxy is then asked
//! for the resolved address (blackbox_exporter puts it in the URL of the first request; Lookout
//! does so for every hop that a `/probe` policy applies to), with the `Host` header and TLS
//! server name still the target's name.
//!
//! The `/probe` policy (`probe_policy.allowed_targets`, see [`crate::probe_guard`]) applies
//! to the target, not to the proxy: the proxy is the operator's choice, but what the proxy
//! is asked to reach is the requester's. So a resolved target's address is checked as for a
//! direct connection, and the proxy is given that checked address, never the name (which the
//! proxy could resolve elsewhere). With `skip_resolve_phase_with_proxy` nothing is resolved
//! here, so the target is checked by its text only: a literal address must lie in an allowed
//! network, a name must match an allowed host pattern (a name allowed only through the
//! networks it resolves to is refused, reason `not_allowed`).

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use http::Uri;
use tokio::net::TcpStream;

use super::super::resolve::resolve_target;
use super::super::tls;
use super::super::{Failure, ProbeRequest, Recorder, connect_failure, reason};
use super::{Phases, proxy};

/// A connection ready for TLS or HTTP.
pub(super) struct Dialed {
    pub tcp: TcpStream,
    /// Through a proxy, for an `http://` URL: the absolute URL to put in the request line
    /// and the `Proxy-Authorization` to send.
    pub forward: Option<(Uri, Option<String>)>,
}

/// Resolves (unless skipped) and connects for a request to `uri`, adding to the phases.
/// Only the first hop's lookup is recorded in the probe's metrics.
#[allow(clippy::too_many_arguments)]
pub(super) async fn dial(
    req: &ProbeRequest<'_>,
    rec: &mut Recorder,
    uri: &Uri,
    https: bool,
    host: &str,
    port: u16,
    first: bool,
    phases: &mut Phases,
) -> Result<Dialed, Failure> {
    let cfg = &req.module.http;
    let skip_resolve = cfg.proxy.configured() && cfg.skip_resolve_phase_with_proxy;
    let ip = if skip_resolve {
        if let Some(policy) = req.policy {
            policy
                .check_unresolved(host)
                .map_err(|why| Failure::new(reason::NOT_ALLOWED, why))?;
        }
        // As blackbox_exporter: no resolve phase, until a redirect adds its (zero) lookup.
        phases.resolved = true;
        phases.hide_resolve = first;
        None
    } else {
        Some(resolve(req, rec, host, first, phases).await?)
    };
    // The URL as the proxy sees it: blackbox_exporter's first request carries the resolved
    // address; under a /probe policy every hop does.
    let wire = match ip {
        Some(ip) if first || req.policy.is_some() => proxy::with_ip(uri, ip)?,
        _ => uri.clone(),
    };
    let wire_host = crate::target::url_host(&wire).to_string();
    let start = Instant::now();
    let chosen = proxy::proxy_for(&cfg.proxy, https, &wire_host, port);
    let dialed = match chosen {
        Err(e) => Err(e),
        Ok(Some(p)) => via_proxy(req, &p, &wire, https, port).await,
        Ok(None) => {
            let ip = match ip {
                Some(ip) => ip,
                // No proxy for this URL after all (no_proxy): resolve it as Go would.
                None => resolve(req, &mut Recorder::default(), host, false, phases).await?,
            };
            direct(SocketAddr::new(ip, port)).await
        }
    };
    phases.connect += start.elapsed();
    phases.publish(rec);
    let dialed = dialed?;
    rec.log(format!(
        "Connected: address={}",
        dialed
            .tcp
            .peer_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string())
    ));
    Ok(dialed)
}

async fn resolve(
    req: &ProbeRequest<'_>,
    rec: &mut Recorder,
    host: &str,
    first: bool,
    phases: &mut Phases,
) -> Result<IpAddr, Failure> {
    let cfg = &req.module.http;
    let mut scratch = Recorder::default();
    let start = Instant::now();
    let resolved = resolve_target(
        if first { &mut *rec } else { &mut scratch },
        host,
        cfg.preferred_ip_protocol,
        cfg.ip_protocol_fallback,
        req.policy,
    )
    .await;
    phases.resolve += start.elapsed();
    // blackbox_exporter builds its HTTP client, reading the TLS files, after resolving the
    // target and before connecting, whatever the scheme: an unreadable ca_file, cert_file or
    // key_file fails even an http:// probe there, with only the resolve phase published.
    let client = match (&resolved, first) {
        (Ok(_), true) => tls::client_config(&cfg.tls_config, &[]).map(drop),
        _ => Ok(()),
    };
    phases.resolved |= resolved.is_ok() && client.is_ok();
    phases.publish(rec);
    let (ip, _) = resolved?;
    client?;
    Ok(ip)
}

async fn direct(addr: SocketAddr) -> Result<Dialed, Failure> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_failure(addr, &e))?;
    let _ = tcp.set_nodelay(true);
    Ok(Dialed { tcp, forward: None })
}

async fn via_proxy(
    req: &ProbeRequest<'_>,
    p: &crate::config::ProxyUrl,
    wire: &Uri,
    https: bool,
    port: u16,
) -> Result<Dialed, Failure> {
    let mut tcp = proxy::connect(p).await?;
    if https {
        let host = crate::target::url_host(wire);
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        proxy::tunnel(
            &mut tcp,
            &authority,
            p,
            &req.module.http.proxy.proxy_connect_header,
            req.limits.max_response_header_bytes,
        )
        .await?;
        Ok(Dialed { tcp, forward: None })
    } else {
        Ok(Dialed {
            tcp,
            forward: Some((wire.clone(), p.authorization.clone())),
        })
    }
}
