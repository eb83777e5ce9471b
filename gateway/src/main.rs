//! `gateway`: the partnership gateway server and its admin commands.

#![forbid(unsafe_code)]

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The Safer Kingston Partnership data-sharing gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway server until SIGTERM or Ctrl-C.
    Serve {
        /// Path to gateway.toml.
        #[arg(long)]
        config: PathBuf,
        /// Listen address, overriding the config (e.g. 127.0.0.1:0 for any free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Make a development PKI: CA, server and agency certificates, linkage key and configs.
    DevCerts {
        /// Output directory.
        #[arg(long, default_value = "certs-dev")]
        out: PathBuf,
        /// Listen address written into the configs.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        /// Replace an existing development CA in the directory.
        #[arg(long)]
        force: bool,
    },
    /// Run the whole flow on synthetic data: certificates, gateway, one agent per agency.
    Demo {
        /// Synthetic rows per dataset.
        #[arg(long, default_value_t = 200)]
        persons: usize,
        /// Where to keep certificates, data and sample exports (default: a temporary directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    });
    gateway::tls::install_crypto_provider();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { config, listen } => {
            let cfg = gateway::config::GatewayConfig::load(&config)?;
            runtime()?.block_on(gateway::server::serve(&cfg, listen))
        }
        Command::DevCerts { out, listen, force } => {
            let opts = gateway::pki::DevPkiOptions {
                listen,
                force,
                ..Default::default()
            };
            let pki = gateway::pki::make_dev_pki(&out, &opts)?;
            println!("development PKI written to {}", pki.dir.display());
            println!(
                "  gateway: gateway serve --config {}",
                pki.gateway_config.display()
            );
            for (agency, cfg) in &pki.agent_configs {
                println!(
                    "  {agency}: agent push --config {} --dataset DATASET FILE",
                    cfg.display()
                );
            }
            Ok(())
        }
        Command::Demo { persons, out } => runtime()?.block_on(gateway::demo::run(persons, out)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_tracing(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GATEWAY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sled=warn,h2=warn,tower=warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
