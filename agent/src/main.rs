//! `agent`: the agency-side agent of the partnership gateway.

#![forbid(unsafe_code)]

use agent::config::AgentConfig;
use agent::push::PushReport;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Pseudonymise agency exports at source and push them to the partnership gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pseudonymise FILE (.csv or .jsonl) as DATASET and send it, with anything still spooled.
    /// Exit codes: 0 all stored; 2 some rows rejected (the rest stored); 3 gateway unreachable,
    /// batches spooled for the next run; 1 error.
    Push {
        /// Path to agent.toml.
        #[arg(long)]
        config: PathBuf,
        /// Catalog dataset name, e.g. police_crime.
        #[arg(long)]
        dataset: String,
        /// Gateway URL, overriding the config.
        #[arg(long)]
        gateway: Option<String>,
        /// The export to send.
        file: PathBuf,
    },
    /// Send everything still spooled, retrying with back-off.
    Run {
        /// Path to agent.toml.
        #[arg(long)]
        config: PathBuf,
        /// Gateway URL, overriding the config.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Check config, key permissions, certificate validity, connectivity and the catalog.
    Check {
        /// Path to agent.toml.
        #[arg(long)]
        config: PathBuf,
        /// Gateway URL, overriding the config.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Write synthetic source exports (one CSV per dataset) for an agency, or `all`.
    Synth {
        /// Agency id or `all`.
        #[arg(long)]
        agency: String,
        /// Size of the synthetic population (rows per dataset as well).
        #[arg(long, default_value_t = 1000)]
        persons: usize,
        /// Random seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn load(config: &std::path::Path, gateway: Option<String>) -> Result<AgentConfig> {
    let mut cfg = AgentConfig::load(config)?;
    if let Some(g) = gateway {
        cfg.gateway = g;
    }
    Ok(cfg)
}

fn run(cli: Cli) -> Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Push {
            config,
            dataset,
            gateway,
            file,
        } => {
            let cfg = load(&config, gateway)?;
            let report = rt.block_on(agent::push::push(&cfg, &dataset, &file))?;
            print_report(&report);
            Ok(report.exit_code())
        }
        Command::Run { config, gateway } => {
            let cfg = load(&config, gateway)?;
            let report = rt.block_on(agent::push::run(&cfg))?;
            print_report(&report);
            Ok(report.exit_code())
        }
        Command::Check { config, gateway } => {
            let cfg = load(&config, gateway)?;
            let lines = rt.block_on(agent::check::check(&cfg));
            let mut ok = true;
            for l in &lines {
                println!("{} {}", if l.ok { "ok  " } else { "FAIL" }, l.text);
                ok &= l.ok;
            }
            Ok(if ok { 0 } else { 1 })
        }
        Command::Synth {
            agency,
            persons,
            seed,
            out,
        } => {
            let catalog = skp_core::Catalog::embedded()?;
            let people = agent::synth::population(persons, seed);
            let datasets: Vec<&skp_core::Dataset> = catalog
                .datasets()
                .filter(|d| agency == "all" || d.owner.as_str() == agency)
                .collect();
            if datasets.is_empty() {
                anyhow::bail!(
                    "no dataset in the catalog is owned by {agency:?}; agencies are met-police, rbk-council, lfb, probation, swl-icb (or all)"
                );
            }
            for (name, path) in agent::synth::write_datasets(datasets, &people, persons, seed, &out)
                .with_context(|| format!("cannot write into {}", out.display()))?
            {
                println!("{name}: {}", path.display());
            }
            Ok(0)
        }
    }
}

fn print_report(r: &PushReport) {
    for s in &r.source_rejections {
        if s.field.is_empty() {
            eprintln!("{}:{}: {}", s.file, s.line, s.reason);
        } else {
            eprintln!(
                "{}:{}: field {} (column \"{}\"): {}",
                s.file, s.line, s.field, s.column, s.reason
            );
        }
    }
    for g in &r.gateway_rejections {
        let file = g
            .batch_id
            .rsplit_once('#')
            .map(|(f, _)| f)
            .unwrap_or(&g.batch_id);
        let field = if g.field.is_empty() {
            String::new()
        } else {
            format!("field {}: ", g.field)
        };
        eprintln!(
            "{file}:{}: refused by the gateway: {field}{}",
            g.source_line, g.reason
        );
    }
    for (f, why) in &r.files_refused {
        eprintln!(
            "the gateway refused {} ({why}); it was moved aside and will not be retried",
            f.display()
        );
    }
    if r.catalog_from_cache {
        eprintln!(
            "note: the gateway was unreachable; rows were checked against the cached catalog"
        );
    }
    println!(
        "rows read {}, rejected at source {}, accepted {}, duplicates {}, replaced {}, rejected by gateway {}{}",
        r.rows_read,
        r.source_rejections.len(),
        r.accepted,
        r.duplicates,
        r.replaced,
        r.gateway_rejected,
        if r.files_pending > 0 {
            format!(
                ", {} spool file(s) waiting for the gateway (sent by the next `agent push` or `agent run`)",
                r.files_pending
            )
        } else {
            String::new()
        }
    );
}
