//! The Grafana dashboard and the Prometheus alert rules refer only to metrics the binaries
//! really emit, and the dashboard is valid JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::BTreeSet, fs, path::Path};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Every `wrapx_…` name in a text, without the histogram suffixes Prometheus adds.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("wrapx_") {
        let start = i + found;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let mut name = &text[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            name = name.strip_suffix(suffix).unwrap_or(name);
        }
        names.insert(name.to_owned());
        i = end;
    }
    names
}

/// The metric names the binaries' sources declare as string literals.
fn emitted() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for dir in ["gateway/src", "worker/src", "admin-api/src"] {
        let mut stack = vec![root().join(dir)];
        while let Some(path) = stack.pop() {
            for entry in fs::read_dir(&path).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = fs::read_to_string(&path).unwrap();
                    for name in metric_names(&text) {
                        if text.contains(&format!("\"{name}\"")) {
                            names.insert(name);
                        }
                    }
                }
            }
        }
    }
    names
}

#[test]
fn dashboard_and_alert_rules_refer_only_to_emitted_metrics() {
    let emitted = emitted();
    for contract in [
        "wrapx_gateway_requests_total",
        "wrapx_gateway_request_duration_seconds",
        "wrapx_gateway_upstream_ttfb_seconds",
        "wrapx_gateway_overhead_seconds",
        "wrapx_gateway_tokens_total",
        "wrapx_gateway_rate_limited_total",
        "wrapx_gateway_events_spooled",
        "wrapx_worker_events_total",
        "wrapx_worker_batch_seconds",
        "wrapx_worker_webhook_deliveries_total",
        "wrapx_admin_requests_total",
    ] {
        assert!(
            emitted.contains(contract),
            "the contract's {contract} is not emitted"
        );
    }

    let dashboard =
        fs::read_to_string(root().join("config/grafana/dashboards/wrapx.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard JSON");
    let panels = parsed["panels"].as_array().expect("panels");
    assert!(
        panels.len() >= 10,
        "the dashboard has {} panels",
        panels.len()
    );
    let alerts = fs::read_to_string(root().join("config/alerts.yml")).unwrap();
    assert!(alerts.contains("groups:") && alerts.contains("- alert:"));

    for (file, text) in [("dashboard", &dashboard), ("alerts.yml", &alerts)] {
        let used = metric_names(text);
        assert!(!used.is_empty(), "{file} uses no metric");
        for name in used {
            assert!(
                emitted.contains(&name),
                "{file} refers to {name}, which no binary emits"
            );
        }
    }
}
