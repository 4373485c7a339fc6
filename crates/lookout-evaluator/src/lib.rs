//! The evaluator: loads Prometheus rule files, evaluates them and sends alerts.
#![warn(missing_docs)]
