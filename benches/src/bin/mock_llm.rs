//! `wrapx-mock-llm`: a fast OpenAI/Anthropic-compatible mock upstream for tests and benchmarks.
//!
//! Prints `listening on <addr>` once ready and stops cleanly on SIGTERM or SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use wrapx_benches::mock_llm::{self, Behavior, Format, MockConfig};

/// A mock LLM upstream speaking OpenAI Chat Completions and Anthropic Messages.
#[derive(Debug, Parser)]
#[command(name = "wrapx-mock-llm", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9999")]
    listen: SocketAddr,
    /// Content chunks (completion tokens) per answer.
    #[arg(long, default_value_t = 5)]
    chunks: usize,
    /// Milliseconds between streamed chunks.
    #[arg(long, default_value_t = 20)]
    chunk_interval_ms: u64,
    /// Milliseconds before a stream's first event.
    #[arg(long, default_value_t = 0)]
    first_byte_delay_ms: u64,
    /// Milliseconds before a non-streaming answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Prompt tokens reported in usage.
    #[arg(long, default_value_t = 10)]
    prompt_tokens: u32,
    /// Do not record requests (use for benchmarks).
    #[arg(long)]
    no_record: bool,
    /// Default behaviour: normal, hang, status-NNN, stall-after-N, malformed, reset-after-N,
    /// end-after-N, error-in-200.
    #[arg(long, default_value = "normal")]
    behavior: Behavior,
    /// Default layout of the answers' bytes: compact, spaced, pretty, crlf.
    #[arg(long, default_value = "compact")]
    format: Format,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.build().context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = MockConfig {
        listen: args.listen,
        mode_default: args.behavior,
        format_default: args.format,
        chunks: args.chunks,
        chunk_interval: Duration::from_millis(args.chunk_interval_ms),
        first_byte_delay: Duration::from_millis(args.first_byte_delay_ms),
        latency: Duration::from_millis(args.latency_ms),
        prompt_tokens: args.prompt_tokens,
        record: !args.no_record,
        tls: None,
    };
    let mock = mock_llm::spawn(config)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", mock.addr()).context("writing to stdout")?;
        out.flush().context("flushing stdout")?;
    }
    stop_signal().await?;
    mock.shutdown().await;
    Ok(())
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
