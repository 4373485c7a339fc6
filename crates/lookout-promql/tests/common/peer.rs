//! Whether a peer program (Prometheus or its tools) can be run. Included by path by the
//! interop tests of other crates too, so it needs nothing but `std`.

use std::process::{Command, Stdio};

/// Whether `bin` can be run. Outside CI a test may skip without it; in CI (`CI` set, where
/// `scripts/install-test-deps.sh` installs the peers) a missing peer is a failure, so an
/// oracle test never passes without its oracle.
pub fn have(bin: &str) -> bool {
    let found = Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{bin} is not installed, and CI needs it (scripts/install-test-deps.sh)"
    );
    found
}
