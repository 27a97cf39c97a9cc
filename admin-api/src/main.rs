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
    /// Make an operator account (or give an existing one the admin flag and this password).
    CreateAdmin {
        #[arg(long)]
        email: String,
        #[arg(long, env = "WRAPX_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
    },
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
        Command::CreateAdmin { email, password } => {
            let id = wrapx_admin::create_admin(&settings, &email, &password).await?;
            tracing::info!(user_id = %id, "operator account ready");
        }
        Command::Serve => {
            settings.warn_if_development_secrets();
            let app = wrapx_admin::Application::build(settings).await?;
            app.run_until(wrapx_core::shutdown::signal()).await?;
        }
    }
    Ok(())
}
