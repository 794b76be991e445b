//! Reads counters from the Prometheus text that Dynamo's system and frontend ports expose.

use prometheus_parse::{Scrape, Value};

/// The sum of every sample of counter `name` whose labels include all of `labels`,
/// or `None` when no such sample exists.
pub fn counter_sum(
    exposition: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<Option<f64>, MetricsError> {
    let lines = exposition.lines().map(|l| Ok(l.to_string()));
    let scrape = Scrape::parse(lines).map_err(|e| MetricsError::Unparsable(e.to_string()))?;
    let mut total = None;
    for sample in scrape.samples.iter().filter(|s| s.metric == name) {
        if !labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v)) {
            continue;
        }
        let value = match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => continue,
        };
        *total.get_or_insert(0.0) += value;
    }
    Ok(total)
}

/// Errors reading an exposition.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    /// The text is not Prometheus exposition format.
    #[error("unparsable Prometheus exposition: {0}")]
    Unparsable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP dynamo_component_requests_total Total requests
# TYPE dynamo_component_requests_total counter
dynamo_component_requests_total{dynamo_component="prefill",dynamo_endpoint="generate",dynamo_namespace="dynamo"} 7
dynamo_component_requests_total{dynamo_component="prefill",dynamo_endpoint="clear_kv_blocks",dynamo_namespace="dynamo"} 2
dynamo_component_requests_total{dynamo_component="backend",dynamo_endpoint="generate",dynamo_namespace="dynamo"} 9
"#;

    #[test]
    fn sums_only_the_matching_samples() {
        let prefill = counter_sum(
            EXPOSITION,
            "dynamo_component_requests_total",
            &[
                ("dynamo_component", "prefill"),
                ("dynamo_endpoint", "generate"),
            ],
        );
        assert_eq!(prefill, Ok(Some(7.0)));
        assert_eq!(
            counter_sum(EXPOSITION, "dynamo_component_requests_total", &[]),
            Ok(Some(18.0))
        );
    }

    #[test]
    fn a_missing_counter_is_none() {
        assert_eq!(counter_sum(EXPOSITION, "nope_total", &[]), Ok(None));
        assert_eq!(
            counter_sum(
                EXPOSITION,
                "dynamo_component_requests_total",
                &[("dynamo_component", "router")]
            ),
            Ok(None)
        );
    }
}
