//! The streaming probe: many concurrent streamed requests, timed chunk by chunk.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::Semaphore;

/// What to send.
pub struct Plan {
    pub url: String,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub requests: usize,
    pub concurrency: usize,
    pub timeout: Duration,
}

/// What was seen, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub requests: usize,
    pub completed: usize,
    pub errors: usize,
    pub ttfb_p50_ms: f64,
    pub ttfb_p99_ms: f64,
    pub gap_p50_ms: f64,
    pub gap_p99_ms: f64,
    pub gap_max_ms: f64,
    pub chunks: usize,
}

struct Timing {
    ttfb: Duration,
    gaps: Vec<Duration>,
}

/// Runs the plan and summarises it.
pub async fn run(plan: Plan) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.concurrency)
        .timeout(plan.timeout)
        .build()?;
    let gate = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let plan = Arc::new(plan);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.requests {
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let client = client.clone();
        let plan = Arc::clone(&plan);
        tasks.spawn(async move {
            let result = one(&client, &plan).await;
            drop(permit);
            result
        });
    }
    let mut timings = Vec::with_capacity(plan.requests);
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(t)) => timings.push(t),
            _ => errors += 1,
        }
    }
    let mut ttfb: Vec<f64> = timings.iter().map(|t| ms(t.ttfb)).collect();
    let mut gaps: Vec<f64> = timings
        .iter()
        .flat_map(|t| t.gaps.iter().map(|g| ms(*g)))
        .collect();
    ttfb.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    Ok(Report {
        requests: plan.requests,
        completed: timings.len(),
        errors,
        ttfb_p50_ms: percentile(&ttfb, 0.50),
        ttfb_p99_ms: percentile(&ttfb, 0.99),
        gap_p50_ms: percentile(&gaps, 0.50),
        gap_p99_ms: percentile(&gaps, 0.99),
        gap_max_ms: gaps.last().copied().unwrap_or(0.0),
        chunks: gaps.len() + timings.len(),
    })
}

async fn one(client: &reqwest::Client, plan: &Plan) -> anyhow::Result<Timing> {
    let mut request = client
        .post(&plan.url)
        .header("content-type", "application/json")
        .body(plan.body.clone());
    for (name, value) in &plan.headers {
        request = request.header(name, value);
    }
    let start = Instant::now();
    let mut response = request.send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let mut ttfb = None;
    let mut last = start;
    let mut gaps = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if chunk.is_empty() {
            continue;
        }
        let now = Instant::now();
        match ttfb {
            None => ttfb = Some(now - start),
            Some(_) => gaps.push(now - last),
        }
        last = now;
    }
    Ok(Timing {
        ttfb: ttfb.unwrap_or_default(),
        gaps,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
