//! The ICMP prober: real echoes to the loopback addresses (the tests run as root), and the
//! message an unprivileged user gets.

mod common;

use common::*;

fn default_ttl(path: &str) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(64.0)
}

/// True when this process may open raw sockets (root or CAP_NET_RAW), as in the test VM.
fn privileged() -> bool {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV4),
    )
    .is_ok()
}

#[tokio::test]
async fn echo_ipv4_loopback() {
    assert!(
        privileged(),
        "the ICMP tests need root or CAP_NET_RAW (see .ci/run)"
    );
    let m = module("prober: icmp\nicmp:\n  preferred_ip_protocol: ip4");
    let r = probe("127.0.0.1", &m).await;
    assert_success(&r);
    for phase in ["resolve", "setup", "rtt"] {
        assert!(labeled(&r, "probe_icmp_duration_seconds", &[("phase", phase)]).is_some());
    }
    assert_eq!(
        value(&r, "probe_icmp_reply_hop_limit"),
        Some(default_ttl("/proc/sys/net/ipv4/ip_default_ttl"))
    );
    assert_eq!(value(&r, "probe_ip_protocol"), Some(4.0));

    // Debian's icmp_ttl5 module, plus a payload and the don't-fragment bit.
    let ttl5 = module(
        "prober: icmp\ntimeout: 5s\nicmp:\n  ttl: 5\n  payload_size: 100\n  dont_fragment: true",
    );
    assert_success(&probe("127.0.0.1", &ttl5).await);

    let from = module("prober: icmp\nicmp:\n  source_ip_address: 127.0.0.1");
    assert_success(&probe("localhost", &module("prober: icmp")).await);
    assert_success(&probe("127.0.0.1", &from).await);
}

#[tokio::test]
async fn echo_ipv6_loopback() {
    let r = probe("::1", &module("prober: icmp")).await;
    assert_success(&r);
    assert_eq!(value(&r, "probe_ip_protocol"), Some(6.0));
    assert_eq!(
        value(&r, "probe_icmp_reply_hop_limit"),
        Some(default_ttl("/proc/sys/net/ipv6/conf/lo/hop_limit"))
    );
}

/// Run as `nobody` with no capabilities: the probe must say what to grant (or, where
/// `net.ipv4.ping_group_range` admits nobody's group, succeed over a datagram socket).
#[test]
fn without_privilege_the_failure_says_what_to_grant() {
    if std::env::var_os("LOOKOUT_ICMP_UNPRIVILEGED_CHILD").is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let r = runtime.block_on(probe("127.0.0.1", &module("prober: icmp")));
        match r.failure {
            Some(f) => println!("REASON={}\nMESSAGE={}", f.reason, f.message),
            None => println!("REASON=none"),
        }
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(exe)
        .args([
            "--exact",
            "without_privilege_the_failure_says_what_to_grant",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LOOKOUT_ICMP_UNPRIVILEGED_CHILD", "1")
        .output()
        .expect("setpriv (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let range: Vec<i64> = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    if range.len() == 2 && range[0] <= 65534 && 65534 <= range[1] {
        assert!(stdout.contains("REASON=none"), "{stdout}");
        return;
    }
    assert!(stdout.contains("REASON=icmp_permission"), "{stdout}");
    assert!(stdout.contains("CAP_NET_RAW"), "{stdout}");
    assert!(stdout.contains("net.ipv4.ping_group_range"), "{stdout}");
}
