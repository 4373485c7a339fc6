//! The evaluator: loads Prometheus rule files, evaluates them and sends alerts.
#![warn(missing_docs)]

pub mod alert;
pub mod datasource;
pub mod embedded;
pub mod notifier;
pub mod remote;
pub mod remote_write;
pub mod rules;
pub mod scrape;
pub mod scrape_config;
pub mod state;
pub mod template;
pub mod web;

pub use alert::{Alert, AlertState, Notify};
pub use datasource::{Datasource, DatasourceError, QuerySample, TimedSample};
