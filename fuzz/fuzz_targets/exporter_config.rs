//! The exporter's configuration file: decoding, defaults and validation of any text, and
//! the probe-target parser the policy and the probers share.
//!
//! Inputs are fed as they are, except those starting with a NUL byte: they drive a generator that builds
//! configurations libFuzzer would rarely find byte by byte: deep YAML nesting, modules of
//! every prober, and targets made of brackets, userinfo, IPv6 zones, ports and schemes.
//! For every generated target, the host the policy checks must be the host the prober
//! connects to, and must be a plain host (no `@`, brackets or path).
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_exporter::config::{Config, ProberKind};
use lookout_exporter::target;

const PIECES: &[&str] = &[
    "http://", "https://", "[", "]", "@", ":", "127.0.0.1", "127.0.0.2", "::1", "%eth0",
    "%25lo", "evil.allowed.test", "user:pw", "/", "?", "#", "80", "65536", "-1", ".", "..",
    "\\", " ", "%", "fe80::1", "[::ffff:127.0.0.1]", "localhost", "xn--", "\u{ff0e}", "0x7f.1",
];

const PROBERS: &[&str] = &["http", "tcp", "dns", "icmp", "grpc", "", "[]"];

/// Cycles through `data`, a byte at a time (zeros once it is used up).
struct Bytes<'a>(std::slice::Iter<'a, u8>);

impl Bytes<'_> {
    fn next(&mut self) -> usize {
        usize::from(self.0.next().copied().unwrap_or(0))
    }
}

fn odd_target(b: &mut Bytes<'_>) -> String {
    let n = b.next() % 8 + 1;
    (0..n).map(|_| PIECES[b.next() % PIECES.len()]).collect()
}

fn nested(b: &mut Bytes<'_>) -> String {
    let depth = b.next() * 4;
    let open: String = (0..depth).map(|i| if i % 2 == 0 { "[" } else { "{a: " }).collect();
    let close: String = (0..depth)
        .rev()
        .map(|i| if i % 2 == 0 { "]" } else { "}" })
        .collect();
    format!("{open}x{close}")
}

fn generated(b: &mut Bytes<'_>) -> (String, Vec<String>) {
    let mut text = String::from("modules:\n");
    let mut targets = Vec::new();
    for m in 0..(b.next() % 4) {
        let prober = PROBERS[b.next() % PROBERS.len()];
        text.push_str(&format!("  m{m}:\n    prober: {prober}\n    timeout: 5s\n"));
        if b.next() % 3 == 0 {
            text.push_str(&format!("    {prober}: {}\n", nested(b)));
        }
    }
    text.push_str("targets:\n");
    for t in 0..(b.next() % 4) {
        let target = odd_target(b);
        text.push_str(&format!(
            "  - name: t{t}\n    module: m{}\n    target: {:?}\n",
            b.next() % 4,
            target
        ));
        targets.push(target);
    }
    text.push_str("probe_policy:\n  allowed_targets: [");
    for _ in 0..(b.next() % 3) {
        text.push_str(&format!("{:?}, ", odd_target(b)));
    }
    text.push_str("'127.0.0.1/32']\n");
    if b.next() % 4 == 0 {
        text.push_str(&format!("extra: {}\n", nested(b)));
    }
    (text, targets)
}

/// The host the policy reads is the prober's, and a plain host.
fn same_host(t: &str) {
    for kind in [
        ProberKind::Http,
        ProberKind::Tcp,
        ProberKind::Dns,
        ProberKind::Icmp,
        ProberKind::Grpc,
        ProberKind::Websocket,
        ProberKind::Unix,
    ] {
        let Ok(host) = target::host(kind, t) else {
            continue;
        };
        let prober_host = match kind {
            ProberKind::Http | ProberKind::Grpc => {
                target::http_url(t).map(|u| target::url_host(&u).to_string())
            }
            ProberKind::Tcp => target::host_port(t, None).map(|(h, _)| h),
            ProberKind::Dns => target::host_port(t, Some(53)).map(|(h, _)| h),
            ProberKind::Icmp => target::icmp_host(t),
            ProberKind::Websocket => {
                target::websocket_url(t).map(|u| target::url_host(&u).to_string())
            }
            // A socket path has no host: `host` must have refused it above.
            ProberKind::Unix => unreachable!("unix target {t:?} gave a host"),
        };
        assert_eq!(prober_host.as_deref(), Ok(host.as_str()), "{kind:?} {t:?}");
        assert!(
            !host.contains(['@', '[', ']', '/', '?', '#']),
            "{kind:?} {t:?} gives host {host:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // A leading NUL (never in a real file) selects the generator; the seeds are files.
    let Some(rest) = data.strip_prefix(&[0u8]) else {
        if let Ok(text) = std::str::from_utf8(data) {
            // Errors are expected; only panics, hangs and runaway memory are failures.
            let _ = Config::parse(text, "fuzz.yml");
            same_host(text);
        }
        return;
    };
    let mut bytes = Bytes(rest.iter());
    let (text, targets) = generated(&mut bytes);
    let _ = Config::parse(&text, "fuzz.yml");
    for t in &targets {
        same_host(t);
    }
});
