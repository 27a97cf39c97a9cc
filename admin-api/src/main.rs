//! `wrapx-admin`: parses arguments and runs the admin API or one of its commands.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "wrapx-admin", about = "The Wrap-X admin REST API")]
struct Cli {
    /// A TOML file layered over the built-in defaults (environment variables still win).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (the default); applies the migrations first.
    Serve,
    /// Apply the migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = wrapx_core::config::Settings::load(cli.config.as_deref())?;
    wrapx_core::telemetry::init_tracing(&settings.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let pool = wrapx_core::db::pool(&settings.database)?;
            wrapx_core::db::migrate(&pool)
                .await
                .context("applying the migrations")?;
            tracing::info!("migrations applied");
        }
        Command::Serve => {
            settings.warn_if_development_secrets();
            let pool = wrapx_core::db::pool(&settings.database)?;
            wrapx_core::db::migrate(&pool)
                .await
                .context("applying the migrations")?;
            tracing::info!(listen = %settings.admin.listen, "wrapx-admin started");
            wrapx_core::shutdown::signal().await;
            pool.close().await;
            tracing::info!("wrapx-admin stopped");
        }
    }
    Ok(())
}
