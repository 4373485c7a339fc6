//! Lookout's PromQL engine: in-memory series storage and an evaluator of PromQL expressions
//! parsed by `promql-parser`, plus a runner for Prometheus's test-script language.
#![warn(missing_docs)]

pub mod duration;
pub mod engine;
pub mod gofmt;
pub mod histogram;
pub mod labels;
pub mod parallel;
pub mod promqltest;
pub mod protowire;
pub mod re2;
pub mod storage;
pub mod syntax;

pub use engine::{Engine, EngineOptions, QueryError, Value};
pub use labels::Labels;
