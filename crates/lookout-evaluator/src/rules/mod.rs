//! Rule files, rule evaluation and the alert state machine (Prometheus's `rules` package).

pub mod file;
pub mod status;
