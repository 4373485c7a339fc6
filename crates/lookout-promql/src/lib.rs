//! Lookout's PromQL engine: in-memory series storage and an evaluator of PromQL expressions
//! parsed by `promql-parser`, plus a runner for Prometheus's test-script language.
#![warn(missing_docs)]

pub mod labels;
pub mod storage;

pub use labels::Labels;
