//! Hostile input against the real binaries: every way found to crash, freeze or starve a
//! Lookout program, each run with the time it may take and a watchdog that keeps asking
//! `/-/healthy` while the attack runs (it must answer within a second, every time).
//!
//! One file per target of the attacks: `hostile/promql.rs` (queries and rule expressions),
//! `hostile/evaluator.rs` (scrapes, templates, YAML, the evaluator's configuration),
//! `hostile/exporter.rs` (the probe policy, the web configuration, authentication, files).
//! The figures these tests stand for are in RELIABILITY.md.

// Each test holds `support::serial()` for its whole run, across awaits: on purpose.
#![allow(clippy::await_holding_lock)]

mod common;

#[path = "hostile/evaluator.rs"]
mod evaluator;
#[path = "hostile/exporter.rs"]
mod exporter;
#[path = "hostile/promql.rs"]
mod promql;
#[path = "hostile/support.rs"]
mod support;
