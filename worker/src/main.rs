//! `wrapx-worker [--config FILE]`: parses arguments and runs the worker library until SIGTERM
//! or SIGINT; everything else is in the library.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(name = "wrapx-worker", about = "The Wrap-X queue consumers")]
struct Cli {
    /// A TOML file layered over the built-in defaults (environment variables still win).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// mimalloc rather than glibc malloc: allocation was a fifth of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = wrapx_core::config::Settings::load(cli.config.as_deref())?;
    wrapx_core::telemetry::init_tracing(&settings.log);
    settings.warn_if_development_secrets();
    let shutdown = wrapx_core::shutdown::on_signal();
    tracing::info!("wrapx-worker starting");
    wrapx_worker::run(settings, shutdown).await?;
    tracing::info!("wrapx-worker stopped");
    Ok(())
}
