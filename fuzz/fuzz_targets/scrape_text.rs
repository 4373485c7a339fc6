//! The scrape parser, for both the Prometheus text format and OpenMetrics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lookout_evaluator::scrape::textparse::{self, Format};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = textparse::parse(text, Format::PrometheusText);
        let _ = textparse::parse(text, Format::OpenMetrics);
    }
});
