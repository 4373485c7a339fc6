//! The exporter: probes targets the way `blackbox_exporter` does and serves the results as
//! Prometheus metrics.
//!
//! * [`config`] — the YAML configuration (`modules:` in blackbox_exporter's schema, plus
//!   Lookout's `targets:` and `heartbeats:`), decoded strictly.
//! * [`prober`] — one file per protocol, all with the same signature.
#![warn(missing_docs)]

pub mod config;
pub mod prober;
