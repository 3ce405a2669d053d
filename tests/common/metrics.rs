//! Reading the watchdog's Prometheus text exposition (`/metrics`), the one parser the tests share.

use super::watchdog::Watchdog;

/// The value of one sample, e.g. `metric_value(text, "http_requests_in_flight")` or
/// `metric_value(text, r#"http_requests_total{code="200",method="post"}"#)`: the series must be
/// spelled as the exposition spells it, labels in order.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The `http_requests_in_flight` gauge of a watchdog started with metrics.
pub fn in_flight(wd: &Watchdog) -> f64 {
    metric_value(&wd.metrics(), "http_requests_in_flight").expect("in-flight gauge")
}
