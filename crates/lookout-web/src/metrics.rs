//! The web layer's own counters, process-wide (a process serving two ports, as `lookout
//! up`, counts both): register them in a program's registry with [`register`].
//!
//! | metric | counts |
//! |---|---|
//! | `lookout_web_config_reload_failures_total` | changes of the web configuration (or a file it names) that were refused: broken, empty, or turning authentication or TLS off before the file settled; the previous configuration stayed in force |
//! | `lookout_web_auth_checks_rejected_total` | requests answered 429 because `--web.auth.max-pending-checks` password checks were already pending |

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Refused changes of the web configuration.
pub static RELOAD_FAILURES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Requests refused because too many password checks were pending.
pub static AUTH_CHECKS_REJECTED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Adds the web layer's counters to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "lookout_web_config_reload_failures",
        "Changes of the web configuration that were refused (broken, empty, or turning authentication or TLS off before the file settled); the previous configuration stayed in force",
        RELOAD_FAILURES.clone(),
    );
    registry.register(
        "lookout_web_auth_checks_rejected",
        "Requests answered 429 because --web.auth.max-pending-checks password checks were already pending",
        AUTH_CHECKS_REJECTED.clone(),
    );
}
