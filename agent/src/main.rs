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
    /// Print the linkage tokens `agent push` puts in records for one person, one `KIND:HEX` line
    /// per kind whose options are all given, for a subject access request: pass them to
    /// `gateway audit person --token nhs:…,demo:…`. Only tokens are printed: raw identifiers
    /// are never printed or logged, and errors name the option, never its value.
    PersonToken {
        /// Path to agent.toml (its linkage key, agency and value mappings are used).
        #[arg(long)]
        config: PathBuf,
        /// NHS number (10 digits with a valid mod-11 check digit).
        #[arg(long)]
        nhs: Option<String>,
        /// PNC id (YYYY/NNNNNNNC or YY/NNNNNNNC with a valid check letter).
        #[arg(long)]
        pnc: Option<String>,
        /// Surname (for the demo token, with --forename, --dob and --sex).
        #[arg(long)]
        surname: Option<String>,
        /// Forename (demo token).
        #[arg(long)]
        forename: Option<String>,
        /// Date of birth, YYYY-MM-DD or DD/MM/YYYY (demo token).
        #[arg(long)]
        dob: Option<String>,
        /// Sex: a catalog value (F, M, Unknown) or a source code mapped in agent.toml (demo
        /// token).
        #[arg(long)]
        sex: Option<String>,
        /// UPRN (1-12 digits).
        #[arg(long)]
        uprn: Option<String>,
        /// Use the token recipes (and value mapping) of this dataset only. Default: for each
        /// kind, the first of the agency's datasets that derives it.
        #[arg(long)]
        dataset: Option<String>,
        /// Use the recipes of this role of --dataset only.
        #[arg(long, requires = "dataset")]
        role: Option<String>,
    },
    /// Write synthetic Kingston exports (one CSV per dataset) for an agency, or `all`, with the
    /// hidden truth under OUT/truth/ (never push it). `--shape source` writes each agency's own
    /// column names, codes and date formats plus OUT/<agency>.agent.toml, the agent mapping
    /// that reads them.
    Synth {
        /// Agency id or `all`.
        #[arg(long)]
        agency: String,
        /// Size of the synthetic population (at most 909,091: the NHS 999 test range).
        #[arg(long, default_value_t = 1000)]
        persons: usize,
        /// Random seed: the same seed and options give byte-identical files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// `catalog`: catalog column names, every row valid (pipeline fixtures); `source`: each
        /// agency's export with realistic identifier errors, some deliberately invalid.
        #[arg(long, value_enum, default_value_t = ShapeArg::Source)]
        shape: ShapeArg,
        /// Rows per dataset. Default: --persons with --shape catalog; with --shape source,
        /// realistic volumes for the population over the window.
        #[arg(long)]
        rows: Option<usize>,
        /// First day of events (YYYY-MM-DD).
        #[arg(long, default_value = "2024-01-01")]
        from: String,
        /// Last day of events (YYYY-MM-DD).
        #[arg(long, default_value = "2024-12-31")]
        to: String,
        /// TOML file overriding error and event rates (`[errors]`, `[events]`, `[events.volumes]`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `--shape` values.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ShapeArg {
    /// Catalog field names and spellings.
    Catalog,
    /// Each agency's own export.
    Source,
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
                let tag = match l.status {
                    agent::check::Status::Pass => "ok  ",
                    agent::check::Status::Warn => "WARN",
                    agent::check::Status::Fail => "FAIL",
                };
                println!("{tag} {}", l.text);
                ok &= l.ok();
            }
            Ok(if ok { 0 } else { 1 })
        }
        Command::PersonToken {
            config,
            nhs,
            pnc,
            surname,
            forename,
            dob,
            sex,
            uprn,
            dataset,
            role,
        } => {
            let who = agent::person_token::PersonIdentifiers {
                nhs,
                pnc,
                surname,
                forename,
                dob,
                sex,
                uprn,
            };
            let choice = agent::person_token::RecipeChoice { dataset, role };
            person_token(&config, &who, &choice)?;
            Ok(0)
        }
        Command::Synth {
            agency,
            persons,
            seed,
            out,
            shape,
            rows,
            from,
            to,
            config,
        } => {
            synth(agency, persons, seed, out, shape, rows, (from, to), config)?;
            Ok(0)
        }
    }
}

fn person_token(
    config: &std::path::Path,
    who: &agent::person_token::PersonIdentifiers,
    choice: &agent::person_token::RecipeChoice,
) -> Result<()> {
    use agent::person_token::{CatalogSource, load_catalog, person_tokens};
    let cfg = AgentConfig::load(config)?;
    let key = cfg.linkage_key()?;
    let (catalog, source) = load_catalog(&cfg)?;
    if source == CatalogSource::Embedded {
        eprintln!(
            "note: no catalog cached under {} yet (run `agent check`); using the catalog built into this agent",
            cfg.state_dir.display()
        );
    }
    let outcome = person_tokens(&catalog, &cfg, &key, who, choice)?;
    for note in &outcome.notes {
        eprintln!("note: {note}");
    }
    for t in &outcome.tokens {
        println!("{t}");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn synth(
    agency: String,
    persons: usize,
    seed: u64,
    out: PathBuf,
    shape: ShapeArg,
    rows: Option<usize>,
    (from, to): (String, String),
    config: Option<PathBuf>,
) -> Result<()> {
    use agent::synth::{MAX_PERSONS, Shape, SynthConfig, Volume};
    if persons == 0 || persons > MAX_PERSONS {
        anyhow::bail!(
            "--persons {persons}: give between 1 and {MAX_PERSONS} (the NHS 999 test range holds {MAX_PERSONS} valid numbers)"
        );
    }
    let catalog = skp_core::Catalog::embedded()?;
    let datasets: Vec<&skp_core::Dataset> = catalog
        .datasets()
        .filter(|d| agency == "all" || d.owner.as_str() == agency)
        .collect();
    if datasets.is_empty() {
        anyhow::bail!(
            "no dataset in the catalog is owned by {agency:?}; agencies are met-police, rbk-council, lfb, probation, swl-icb (or all)"
        );
    }
    let (shape, default_volume) = match shape {
        ShapeArg::Catalog => (Shape::Catalog, Volume::PerDataset(persons)),
        ShapeArg::Source => (Shape::Source, Volume::Realistic),
    };
    let mut cfg = SynthConfig::new(
        seed,
        shape,
        rows.map(Volume::PerDataset).unwrap_or(default_volume),
    );
    let day = |flag: &str, s: &str| {
        time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
            .with_context(|| format!("{flag} {s:?}: expected a date like 2024-01-31"))
    };
    cfg.from = day("--from", &from)?;
    cfg.to = day("--to", &to)?;
    if let Some(path) = &config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        cfg.apply_toml(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
    }
    let problems = cfg.validate();
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("\n"));
    }
    let people = agent::synth::population(persons, seed);
    let written = agent::synth::generate(datasets, &people, &cfg, &out)
        .with_context(|| format!("cannot write into {}", out.display()))?;
    for w in &written {
        println!("{}: {}", w.dataset, w.path.display());
    }
    eprintln!(
        "{} rows in {} files; hidden truth in {} (never push it){}",
        written.iter().map(|w| w.rows).sum::<u64>(),
        written.len(),
        out.join("truth").display(),
        if shape == Shape::Source {
            format!("; agent mappings in {}/<agency>.agent.toml", out.display())
        } else {
            String::new()
        }
    );
    Ok(())
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
    if let Some(why) = &r.last_failure {
        eprintln!("error: the gateway could not take the batches: {why}");
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
