//! `wrapx-stream-probe`: opens many streaming requests at once and reports, as JSON, the time
//! to first byte and the gaps between chunks: what a load tool that only times whole requests
//! cannot see. Used by `benches/run`.

use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(name = "wrapx-stream-probe")]
struct Cli {
    /// The URL to POST to.
    #[arg(long)]
    url: String,
    /// The JSON body of every request.
    #[arg(long)]
    body: String,
    /// `name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Requests in all.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// Requests open at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Give up on one request after this long.
    #[arg(long, default_value_t = 120_000)]
    timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut headers = Vec::new();
    for h in &cli.headers {
        let Some((name, value)) = h.split_once(':') else {
            anyhow::bail!("--header {h:?}: expected `name: value`");
        };
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let plan = wrapx_benches::probe::Plan {
        url: cli.url,
        body: cli.body,
        headers,
        requests: cli.requests,
        concurrency: cli.concurrency,
        timeout: Duration::from_millis(cli.timeout_ms),
    };
    let report = wrapx_benches::probe::run(plan).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
