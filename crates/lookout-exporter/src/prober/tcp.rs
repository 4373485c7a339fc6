//! The TCP prober: connect to `host:port`, optionally start TLS, then walk the
//! `query_response` dialogue as blackbox_exporter does (shared with the unix socket prober:
//! see [`super::query_response`]).

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

use super::query_response::{self, Conn, TlsTarget};
use super::resolve::resolve_target;
use super::{Failure, ProbeRequest, Recorder, connect_failure, reason};

/// Connects to `addr`, from `source` when given.
pub(crate) async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, Failure> {
    let result = match source {
        None => TcpStream::connect(addr).await,
        Some(src) => {
            let socket = if addr.is_ipv6() {
                TcpSocket::new_v6()
            } else {
                TcpSocket::new_v4()
            };
            match socket.and_then(|s| s.bind(SocketAddr::new(src, 0)).map(|()| s)) {
                Ok(s) => s.connect(addr).await,
                Err(e) => {
                    return Err(Failure::new(
                        reason::CONNECTION_FAILED,
                        format!("cannot bind source address {src}: {e}"),
                    ));
                }
            }
        }
    };
    result.map_err(|e| connect_failure(addr, &e))
}

/// Probes a `host:port` over TCP.
pub async fn probe_tcp(req: &ProbeRequest<'_>, rec: &mut Recorder) -> Result<(), Failure> {
    let cfg = &req.module.tcp;
    query_response::record_defaults(rec);
    let (host, port) = crate::target::host_port(req.target, None)?;
    let (ip, _) = resolve_target(
        rec,
        &host,
        cfg.preferred_ip_protocol,
        cfg.ip_protocol_fallback,
        req.policy,
    )
    .await?;
    let addr = SocketAddr::new(ip, port);
    let tcp = connect(addr, cfg.source_ip_address).await?;
    rec.log(format!("Successfully dialed: address={addr}"));
    let tls_target = TlsTarget {
        config: &cfg.tls_config,
        host: Some(req.hostname.unwrap_or(&host)),
    };
    let conn = if cfg.tls {
        tls_target.start(rec, tcp).await?
    } else {
        Conn::Plain(tcp)
    };
    query_response::run(rec, &cfg.query_response, conn, &tls_target).await
}
