//! The ICMP prober: one echo request, one matching echo reply, timed here with [`Instant`]
//! (libraries that time inside their own loop report 0 ns on fast paths).
//!
//! It opens a raw ICMP socket when it may (root or `CAP_NET_RAW`), otherwise Linux's
//! unprivileged ICMP datagram socket (allowed to groups in `net.ipv4.ping_group_range`,
//! which also covers IPv6). Without either the probe fails with reason `icmp_permission` and
//! a message that says what to grant. Replies are matched by identifier (raw sockets; the
//! kernel owns it on datagram sockets), sequence number and payload. The reply's hop limit
//! is read from the IPv4 header or from `IP_TTL`/`IPV6_HOPLIMIT` control messages.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::resolve::resolve_target;
use super::{Failure, ProbeRequest, Recorder, reason};
use crate::config::IcmpProbe;

const H_PHASE: &str = "Duration of ICMP request by phase";
const H_HOP: &str = "Replied packet hop limit (TTL for ipv4)";
const PAYLOAD: &[u8] = b"Lookout ICMP echo probe";

/// Message telling an operator how to allow ICMP probes.
pub const PERMISSION_HINT: &str = "ICMP probes need a raw socket or an unprivileged ICMP socket: \
grant the lookout binary CAP_NET_RAW (`setcap cap_net_raw+ep $(which lookout)`, or \
`AmbientCapabilities=CAP_NET_RAW` in its systemd unit), or allow its group to open ICMP \
datagram sockets with `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`";

static SEQUENCE: AtomicU16 = AtomicU16::new(0);

fn record_phase(rec: &mut Recorder, phase: &str, d: Duration) {
    rec.set_labeled(
        "probe_icmp_duration_seconds",
        H_PHASE,
        &[("phase", phase)],
        d.as_secs_f64(),
    );
}

/// Probes a host with one ICMP echo.
pub async fn probe_icmp(req: &ProbeRequest<'_>, rec: &mut Recorder) -> Result<(), Failure> {
    let cfg = &req.module.icmp;
    for phase in ["resolve", "setup", "rtt"] {
        record_phase(rec, phase, Duration::ZERO);
    }
    let host = crate::target::icmp_host(req.target)?;
    let host = host.as_str();
    let (ip, resolve_time) = resolve_target(
        rec,
        host,
        cfg.preferred_ip_protocol,
        cfg.ip_protocol_fallback,
        req.policy,
    )
    .await?;
    record_phase(rec, "resolve", resolve_time);

    let setup_start = Instant::now();
    let (socket, raw) = open_socket(ip, cfg)?;
    // SAFETY: the `Socket` owns its descriptor, which stays open and unchanged until the
    // `AsyncFd` (which owns the `Socket`) is dropped.
    let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| {
        Failure::new(
            reason::ICMP_ERROR,
            format!("cannot register the ICMP socket: {e}"),
        )
    })?;
    let id = super::dns::random_u16();
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let payload: Vec<u8> = if cfg.payload_size == 0 {
        PAYLOAD.to_vec()
    } else {
        PAYLOAD
            .iter()
            .copied()
            .cycle()
            .take(cfg.payload_size)
            .collect()
    };
    let packet = echo_request(ip.is_ipv6(), id, seq, &payload);
    record_phase(rec, "setup", setup_start.elapsed());
    rec.log(format!(
        "Sending ICMP echo request: ip={ip} id={id} seq={seq} bytes={} socket={}",
        packet.len(),
        if raw { "raw" } else { "datagram" }
    ));

    let dest = SockAddr::from(SocketAddr::new(ip, 0));
    let rtt_start = Instant::now();
    loop {
        let mut guard = socket
            .writable()
            .await
            .map_err(|e| Failure::new(reason::ICMP_ERROR, format!("ICMP socket error: {e}")))?;
        match guard.try_io(|s| s.get_ref().send_to(&packet, &dest)) {
            Ok(Ok(_)) => break,
            Ok(Err(e)) => {
                return Err(Failure::new(
                    reason::NETWORK_ERROR,
                    format!("error sending the ICMP echo request to {ip}: {e}"),
                ));
            }
            Err(_would_block) => continue,
        }
    }

    let mut buf = vec![0u8; 65_536];
    loop {
        let mut guard = socket
            .readable()
            .await
            .map_err(|e| Failure::new(reason::ICMP_ERROR, format!("ICMP socket error: {e}")))?;
        let (n, cmsg_hops) =
            match guard.try_io(|s| recv_with_hop_limit(s.get_ref().as_raw_fd(), &mut buf)) {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    return Err(Failure::new(
                        reason::NETWORK_ERROR,
                        format!("error receiving the ICMP echo reply: {e}"),
                    ));
                }
                Err(_would_block) => continue,
            };
        let received = Instant::now();
        if let Some(hops) = match_reply(&buf[..n], ip, raw, id, seq, &payload, cmsg_hops) {
            let rtt = received.duration_since(rtt_start);
            record_phase(rec, "rtt", rtt);
            if let Some(h) = hops {
                rec.set("probe_icmp_reply_hop_limit", H_HOP, f64::from(h));
            }
            rec.log(format!(
                "Found matching reply packet: rtt_seconds={:.6}",
                rtt.as_secs_f64()
            ));
            return Ok(());
        }
    }
}

fn open_socket(ip: IpAddr, cfg: &IcmpProbe) -> Result<(Socket, bool), Failure> {
    let (domain, protocol) = if ip.is_ipv6() {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let (socket, raw) = match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(s) => (s, true),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            match Socket::new(domain, Type::DGRAM, Some(protocol)) {
                Ok(s) => (s, false),
                Err(e2) if e2.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(Failure::new(
                        reason::ICMP_PERMISSION,
                        format!("{PERMISSION_HINT} (raw socket: {e}; datagram socket: {e2})"),
                    ));
                }
                Err(e2) => {
                    return Err(Failure::new(
                        reason::ICMP_ERROR,
                        format!("cannot open an ICMP socket: {e2}"),
                    ));
                }
            }
        }
        Err(e) => {
            return Err(Failure::new(
                reason::ICMP_ERROR,
                format!("cannot open an ICMP socket: {e}"),
            ));
        }
    };
    let setup = |what: &str, r: io::Result<()>| {
        r.map_err(|e| {
            Failure::new(
                reason::ICMP_ERROR,
                format!("cannot set {what} on the ICMP socket: {e}"),
            )
        })
    };
    setup("non-blocking mode", socket.set_nonblocking(true))?;
    if let Some(src) = cfg.source_ip_address {
        // Linux binds an IPv4 raw socket to an IPv6 address without complaint (reading the
        // wrong bytes): refuse it, as Go's ListenPacket in blackbox_exporter does.
        if src.is_ipv6() != ip.is_ipv6() {
            return Err(Failure::new(
                reason::ICMP_ERROR,
                format!("source_ip_address {src} is not of the target {ip}'s IP version"),
            ));
        }
        setup(
            "source_ip_address",
            socket.bind(&SockAddr::from(SocketAddr::new(src, 0))),
        )?;
    }
    let fd = socket.as_raw_fd();
    if ip.is_ipv6() {
        if cfg.ttl > 0 {
            setup("ttl", socket.set_unicast_hops_v6(u32::from(cfg.ttl)))?;
        }
        setup("IPV6_RECVHOPLIMIT", socket.set_recv_hoplimit_v6(true))?;
        if cfg.dont_fragment {
            setup(
                "dont_fragment",
                set_int_option(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1),
            )?;
        }
    } else {
        if cfg.ttl > 0 {
            setup("ttl", socket.set_ttl(u32::from(cfg.ttl)))?;
        }
        setup(
            "IP_RECVTTL",
            set_int_option(fd, libc::IPPROTO_IP, libc::IP_RECVTTL, 1),
        )?;
        if cfg.dont_fragment {
            setup(
                "dont_fragment",
                set_int_option(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_MTU_DISCOVER,
                    libc::IP_PMTUDISC_DO,
                ),
            )?;
        }
    }
    Ok((socket, raw))
}

fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a c_int whose
    // size is passed along.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `recvmsg` that also returns the hop limit from `IP_TTL` / `IPV6_HOPLIMIT` control data.
fn recv_with_hop_limit(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u8>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: an all-zero msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (over `buf`) and `control`, which outlive the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut hops = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled in, bounded by
    // `msg_controllen`; each data item read is a c_int as the socket options document.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if (c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_TTL)
                || (c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_HOPLIMIT)
            {
                let value = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                hops = u8::try_from(value).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, hops))
}

/// Builds an echo request (checksum filled in for IPv4; the kernel does it for ICMPv6).
fn echo_request(ipv6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.push(if ipv6 { 128 } else { 8 });
    p.push(0);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    if !ipv6 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` is the reply to our request; returns the reply's hop limit if known.
fn match_reply(
    packet: &[u8],
    target: IpAddr,
    raw: bool,
    id: u16,
    seq: u16,
    payload: &[u8],
    cmsg_hops: Option<u8>,
) -> Option<Option<u8>> {
    let (icmp, hops) = match target {
        // Raw IPv4 sockets deliver the IP header too.
        IpAddr::V4(t) if raw => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            if packet.len() < ihl + 8 || ihl < 20 {
                return None;
            }
            let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
            if src != t {
                return None;
            }
            (&packet[ihl..], Some(packet[8]))
        }
        _ => (packet, cmsg_hops),
    };
    if icmp.len() < 8 {
        return None;
    }
    let reply_type = if target.is_ipv6() { 129 } else { 0 };
    let got_id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let got_seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    // Datagram sockets rewrite the identifier; the kernel already filtered by it.
    let id_ok = !raw || got_id == id;
    if icmp[0] == reply_type && icmp[1] == 0 && id_ok && got_seq == seq && &icmp[8..] == payload {
        Some(hops)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_echo_request_verifies() {
        let p = echo_request(false, 0x1234, 7, b"abc");
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!(p[0], 8);
    }

    #[test]
    fn matches_only_our_reply() {
        let mut reply = echo_request(false, 9, 3, b"x");
        reply[0] = 0;
        let target = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            match_reply(&reply, target, false, 1, 3, b"x", Some(64)),
            Some(Some(64))
        );
        assert_eq!(match_reply(&reply, target, true, 1, 3, b"x", None), None);
        assert_eq!(match_reply(&reply, target, false, 1, 4, b"x", None), None);
        let request = echo_request(false, 9, 3, b"x");
        assert_eq!(match_reply(&request, target, false, 9, 3, b"x", None), None);
    }
}
