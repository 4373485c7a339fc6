//! The unix socket prober (blackbox_exporter 0.28's `prober/unix.go`): connect to the socket
//! whose path is the target, optionally start TLS, then walk the same `query_response`
//! dialogue as the TCP prober ([`super::query_response`]).
//!
//! It publishes what the TCP prober does minus the resolution metrics: there is no name to
//! resolve. Connect errors are `connection_refused` (nobody listens), `connection_failed`
//! (no such file, permission denied: the message says which). Who may ask `/probe` for a
//! unix socket is decided by the probe policy ([`crate::probe_guard`]): only configured
//! targets and listed paths.

use tokio::net::UnixStream;

use super::query_response::{self, Conn, TlsTarget};
use super::{Failure, ProbeRequest, Recorder, reason};

/// Probes the unix socket at the target path.
pub async fn probe_unix(req: &ProbeRequest<'_>, rec: &mut Recorder) -> Result<(), Failure> {
    let cfg = &req.module.unix;
    query_response::record_defaults(rec);
    let path = crate::target::unix_path(req.target)?;
    let stream = UnixStream::connect(path).await.map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => reason::CONNECTION_REFUSED,
            _ => reason::CONNECTION_FAILED,
        };
        let detail = match e.kind() {
            std::io::ErrorKind::PermissionDenied => "permission denied connecting to unix socket",
            _ => "error dialing unix socket",
        };
        Failure::new(why, format!("{detail} {path}: {e}"))
    })?;
    rec.log(format!("Successfully dialed: path={path}"));
    let tls_target = TlsTarget {
        config: &cfg.tls_config,
        host: req.hostname,
    };
    let conn = if cfg.tls {
        tls_target.start(rec, stream).await?
    } else {
        Conn::Plain(stream)
    };
    query_response::run(rec, &cfg.query_response, conn, &tls_target).await
}
