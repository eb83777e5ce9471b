//! `gateway`: the partnership gateway server and its admin commands.

#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The Safer Kingston Partnership data-sharing gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log line format on stderr: `text` (for people) or `json` (one object a line, for log
    /// collectors).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The file format of `gateway extract`'s data files.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExtractFormat {
    /// CSV only, as released.
    Csv,
    /// The released CSV files, plus a Parquet copy of each (`<name>.parquet`) written once
    /// every file has verified against the manifest.
    Parquet,
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
    /// Make a development PKI: CA, server and agency certificates, CRL, linkage key and configs.
    #[command(args_conflicts_with_subcommands = true)]
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
        #[command(subcommand)]
        action: Option<DevCertsCommand>,
    },
    /// Run the whole flow on synthetic data: certificates, gateway, one agent per agency.
    Demo {
        /// Synthetic rows per dataset.
        #[arg(long, default_value_t = 1000)]
        persons: usize,
        /// Where to keep certificates, data and sample exports (default: a temporary directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Read, prove, export and verify the audit log (information governance officers).
    #[command(subcommand)]
    Audit(Box<AuditCommand>),
    /// Check, test and dry-run the information sharing agreements (partnership admin).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Issue a development JWT (dev identity provider only), printed on stdout.
    Token {
        /// Subject (the person's id).
        #[arg(long)]
        sub: String,
        /// Role: analyst, auditor or admin (repeat for several).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// The person's agency.
        #[arg(long)]
        agency: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Lifetime, e.g. 8h, 30m (at most 24h).
        #[arg(long, default_value = "8h")]
        ttl: String,
        /// Directory of the dev PKI (holds idp.key).
        #[arg(long, default_value = "certs-dev")]
        pki: PathBuf,
    },
    /// The agreements and the purposes you may request (analyst; token from the client config
    /// or SKP_TOKEN).
    Agreements {
        /// Analyst client config.
        #[arg(long, default_value = DEFAULT_ANALYST_CONFIG)]
        config: PathBuf,
        /// Gateway URL, overriding the config's.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Ask the gateway what a request would release, field by field (audited dry run).
    Explain {
        /// Analyst client config.
        #[arg(long, default_value = DEFAULT_ANALYST_CONFIG)]
        config: PathBuf,
        /// Gateway URL, overriding the config's.
        #[arg(long)]
        gateway: Option<String>,
        /// Agreement id.
        #[arg(long)]
        agreement: String,
        /// Purpose id.
        #[arg(long)]
        purpose: String,
        /// Dataset.
        #[arg(long)]
        dataset: String,
        /// Fields (comma-separated, `field` or `field:transform`); default: every field.
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
    },
    /// Receive a linked record extract: one CSV per dataset plus manifest.json (analyst).
    Extract {
        /// Analyst client config.
        #[arg(long, default_value = DEFAULT_ANALYST_CONFIG)]
        config: PathBuf,
        /// Gateway URL, overriding the config's.
        #[arg(long)]
        gateway: Option<String>,
        /// Agreement id.
        #[arg(long)]
        agreement: String,
        /// Purpose id.
        #[arg(long)]
        purpose: String,
        /// Datasets (comma-separated); default: every dataset of the purpose.
        #[arg(long, value_delimiter = ',')]
        datasets: Vec<String>,
        /// Fields (comma-separated `dataset.field` or `dataset.field:transform` for a coarser
        /// generalisation, e.g. police_crime.committed_from:quarter); a dataset named here
        /// releases only the fields named for it. Coarser quasi-identifiers suppress fewer rows.
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        /// Output folder (new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Data file format: `csv`, or `parquet` for a Parquet copy beside each CSV (the CSV
        /// files stay: the manifest and the audit entry cover them).
        #[arg(long, value_enum, default_value_t = ExtractFormat::Csv)]
        format: ExtractFormat,
    },
    /// Receive a counts table with disclosure control plus manifest.json (analyst).
    Aggregate {
        /// Analyst client config.
        #[arg(long, default_value = DEFAULT_ANALYST_CONFIG)]
        config: PathBuf,
        /// Gateway URL, overriding the config's.
        #[arg(long)]
        gateway: Option<String>,
        /// Agreement id.
        #[arg(long)]
        agreement: String,
        /// Purpose id.
        #[arg(long)]
        purpose: String,
        /// Dataset.
        #[arg(long)]
        dataset: String,
        /// Fields to count by (comma-separated, `field` or `field:transform`); the first gives
        /// the table's rows.
        #[arg(long, value_delimiter = ',', required = true)]
        by: Vec<String>,
        /// Output folder (new or empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the public transparency register of releases (releases.csv + index.html, no
    /// personal data) from an audit export, verified first against the pinned key.
    Register {
        /// Audit export (`gateway audit export --out FILE`).
        #[arg(long)]
        export: PathBuf,
        /// The pinned verifier key: a file (audit.pub) or the key text.
        #[arg(long)]
        pubkey: String,
        /// The log's origin.
        #[arg(long, default_value = "kingston.skp/audit/v1")]
        origin: String,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Development PKI maintenance (`gateway dev-certs ACTION`).
#[derive(Subcommand)]
enum DevCertsCommand {
    /// Revoke an agency's agent certificate: add its serial to the dev CRL (agents.crl.pem),
    /// signed by the dev CA with the next CRL number. A running gateway refuses the agent from
    /// its next connection.
    Revoke {
        /// The agency whose certificate (agents/<ID>.pem) is revoked.
        #[arg(long)]
        agency: String,
        /// Directory of the dev PKI (holds ca.key and agents/).
        #[arg(long, default_value = "certs-dev")]
        pki: PathBuf,
    },
}

/// Default analyst client config (made by `gateway dev-certs`).
const DEFAULT_ANALYST_CONFIG: &str = "certs-dev/analysts/rbk-analyst.toml";

/// A token given in the environment overrides the config's token file.
fn token_override() -> Option<String> {
    std::env::var("SKP_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
}

fn parse_ttl(s: &str) -> Result<time::Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| anyhow::anyhow!("--ttl {s:?}: write e.g. 8h, 30m or 3600s"))?;
    match unit {
        "h" => Ok(time::Duration::hours(n)),
        "m" => Ok(time::Duration::minutes(n)),
        "s" | "" => Ok(time::Duration::seconds(n)),
        _ => anyhow::bail!("--ttl {s:?}: write e.g. 8h, 30m or 3600s"),
    }
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate the agreements exactly as the gateway does at start-up.
    Check {
        /// Directory of agreement files (default: the agreements compiled in).
        dir: Option<PathBuf>,
    },
    /// Run the golden decision files against the agreements.
    Test {
        /// Directory of agreement files (default: the agreements compiled in).
        dir: Option<PathBuf>,
        /// Directory of golden decision files (default: the ones compiled in).
        #[arg(long)]
        tests: Option<PathBuf>,
    },
    /// Dry run: what a request would release, field by field, and why anything is refused.
    Explain {
        /// Directory of agreement files (default: the agreements compiled in).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Agreement id.
        #[arg(long)]
        agreement: String,
        /// Purpose id.
        #[arg(long)]
        purpose: String,
        /// Dataset.
        #[arg(long)]
        dataset: String,
        /// Fields (comma-separated, `field` or `field:transform`); default: every field.
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        /// The requester's agency.
        #[arg(long)]
        agency: String,
        /// The requester's subject.
        #[arg(long, default_value = "analyst")]
        sub: String,
        /// The requester's roles (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "analyst")]
        roles: Vec<String>,
        /// Decide at this instant (RFC 3339) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
}

/// Default auditor client config (made by `gateway dev-certs`).
const DEFAULT_AUDITOR_CONFIG: &str = "certs-dev/auditors/ig-officer.toml";

#[derive(Subcommand)]
enum AuditCommand {
    /// List audit entries (a table, or JSON lines with --json); the query is itself audited.
    Log {
        /// Auditor client config.
        #[arg(long, default_value = DEFAULT_AUDITOR_CONFIG)]
        config: PathBuf,
        /// Gateway URL, overriding the config's.
        #[arg(long)]
        gateway: Option<String>,
        /// Entries at or after this UTC time or date (RFC 3339, e.g. 2026-11-25).
        #[arg(long)]
        from: Option<String>,
        /// Entries before this UTC time or date.
        #[arg(long)]
        to: Option<String>,
        /// Actor id (SPIFFE URI), exact.
        #[arg(long)]
        actor: Option<String>,
        /// Actor's agency, e.g. lfb.
        #[arg(long)]
        agency: Option<String>,
        /// Action: ingest, withdraw, release, deny, audit_query, policy_load, auth_failure,
        /// gateway_start, gateway_stop, storage_failure.
        #[arg(long)]
        action: Option<String>,
        /// Agreement id.
        #[arg(long)]
        agreement: Option<String>,
        /// Purpose id.
        #[arg(long)]
        purpose: Option<String>,
        /// allow or deny.
        #[arg(long)]
        decision: Option<String>,
        /// First entry index to consider.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Most entries to print (at most 10000).
        #[arg(long, default_value_t = 1000)]
        limit: u64,
        /// Print the entries' canonical JSON, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Export every entry with a signed checkpoint covering them to FILE (checked after writing).
    Export {
        /// Auditor client config.
        #[arg(long, default_value = DEFAULT_AUDITOR_CONFIG)]
        config: PathBuf,
        /// Gateway URL, overriding the config's.
        #[arg(long)]
        gateway: Option<String>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an export offline: every leaf, the root, the signature, and consistency with a
    /// checkpoint you kept. Names the first bad entry; exit code 1 if anything is wrong.
    Verify {
        /// The export file.
        file: PathBuf,
        /// The pinned verifier key: a file (audit.pub) or the key text.
        #[arg(long)]
        pubkey: String,
        /// An older signed checkpoint you kept (e.g. from `gateway audit tree-head --save`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The log's origin.
        #[arg(long, default_value = "kingston.skp/audit/v1")]
        origin: String,
        /// Also decode every entry and check every seq and prev link, even when the root
        /// matches (catches a log that was signed as written but is internally wrong).
        #[arg(long)]
        thorough: bool,
    },
    /// Fetch entry N with its inclusion proof and check it against a signed checkpoint.
    Prove {
        /// Auditor client config.
        #[arg(long, default_value = DEFAULT_AUDITOR_CONFIG)]
        config: PathBuf,
        /// Gateway URL, overriding the config's.
        #[arg(long)]
        gateway: Option<String>,
        /// Entry index.
        #[arg(long)]
        entry: u64,
    },
    /// Check a release folder: every file against manifest.json, the manifest against its audit
    /// entry, the entry against the signed checkpoint (offline, with the pinned key); with
    /// --online also that the checkpoint is consistent with the gateway's log now.
    VerifyRelease {
        /// The release folder.
        dir: PathBuf,
        /// The pinned verifier key: a file (audit.pub) or the key text.
        #[arg(long)]
        pubkey: String,
        /// The log's origin.
        #[arg(long, default_value = "kingston.skp/audit/v1")]
        origin: String,
        /// Also ask the gateway (auditor config) for a consistency proof to its current tree.
        #[arg(long)]
        online: bool,
        /// Auditor client config (with --online).
        #[arg(long, default_value = DEFAULT_AUDITOR_CONFIG)]
        config: PathBuf,
        /// Gateway URL, overriding the config's.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Which releases included a person: give the tokens the person's agency computed
    /// (`agent person-token`); answers with releases only, never data. Audited.
    Person {
        /// Auditor client config.
        #[arg(long, default_value = DEFAULT_AUDITOR_CONFIG)]
        config: PathBuf,
        /// Gateway URL, overriding the config's.
        #[arg(long)]
        gateway: Option<String>,
        /// Tokens as KIND:HEX (repeat, or comma-separated), e.g. nhs:3f2a…
        #[arg(long = "token", value_delimiter = ',', required = true)]
        tokens: Vec<String>,
    },
    /// Fetch and check the current signed checkpoint; --save keeps it for later verification.
    TreeHead {
        /// Auditor client config.
        #[arg(long, default_value = DEFAULT_AUDITOR_CONFIG)]
        config: PathBuf,
        /// Gateway URL, overriding the config's.
        #[arg(long)]
        gateway: Option<String>,
        /// Save the signed checkpoint to this file.
        #[arg(long)]
        save: Option<PathBuf>,
    },
}

fn print_received(got: &gateway::client::Received, copies: &[gateway::client::ParquetCopy]) {
    println!(
        "release {} written to {} (audit entry {}):",
        got.release_id,
        got.dir.display(),
        got.audit_entry
    );
    for (name, bytes) in &got.files {
        println!("  {name:<48} {bytes:>12} bytes");
    }
    if !copies.is_empty() {
        println!("Parquet copies of the verified CSV files:");
        for c in copies {
            println!("  {:<48} {:>12} rows  (from {})", c.parquet, c.rows, c.csv);
        }
    }
    println!(
        "check it with: gateway audit verify-release {} --pubkey audit.pub",
        got.dir.display()
    );
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(
        if matches!(cli.command, Command::Demo { .. }) {
            "warn"
        } else {
            "info"
        },
        cli.log_format,
    );
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
        Command::DevCerts {
            action: Some(DevCertsCommand::Revoke { agency, pki }),
            ..
        } => {
            let id = skp_core::AgencyId::new(&agency)
                .map_err(|e| anyhow::anyhow!("--agency {agency:?}: {e}"))?;
            let done = gateway::pki::revoke_agent(&pki, &id, time::OffsetDateTime::now_utc())?;
            if done.already {
                println!(
                    "the certificate of {id} (serial {}) is already revoked in {} (CRL number {}); nothing changed",
                    done.serial,
                    done.crl.display(),
                    done.crl_number
                );
            } else {
                println!(
                    "revoked the certificate of {id} (serial {}): {} now holds CRL number {}",
                    done.serial,
                    done.crl.display(),
                    done.crl_number
                );
                println!(
                    "a gateway with [tls] crl = \"{}\" refuses {id} from its next connection; it needs a new certificate from the CA to connect again",
                    gateway::pki::DEV_CRL_FILE
                );
            }
            if done.created {
                println!(
                    "note: {} was created; add crl = \"{}\" under [tls] in {}",
                    done.crl.display(),
                    gateway::pki::DEV_CRL_FILE,
                    pki.join("gateway.toml").display()
                );
            }
            Ok(())
        }
        Command::DevCerts {
            out,
            listen,
            force,
            action: None,
        } => {
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
        Command::Audit(cmd) => audit(*cmd),
        Command::Policy(cmd) => policy(cmd),
        Command::Token {
            sub,
            roles,
            agency,
            name,
            ttl,
            pki,
        } => {
            let roles = roles
                .iter()
                .map(|r| {
                    r.parse::<gateway::jwt::Role>()
                        .map_err(|e| anyhow::anyhow!("--role {r}: {e}"))
                })
                .collect::<Result<Vec<_>>>()?;
            let req = gateway::jwt::DevTokenRequest {
                agency: agency.as_deref(),
                name: name.as_deref(),
                ttl: parse_ttl(&ttl)?,
                ..gateway::jwt::DevTokenRequest::new(&sub, &roles)
            };
            let token =
                gateway::jwt::issue_dev_token(&pki.join(gateway::jwt::DEV_IDP_KEY_FILE), &req)?;
            println!("{token}");
            Ok(())
        }
        Command::Agreements { config, gateway } => {
            let cfg = gateway::client::ClientConfig::load(&config, gateway, token_override())?;
            let list = runtime()?.block_on(gateway::client::agreements(&cfg))?;
            for a in &list.agreements {
                println!(
                    "{}  v{}  {}  [{}{}]  valid {} .. {}  review by {}",
                    a.id,
                    a.version,
                    a.title,
                    a.status,
                    if a.review_due { ", REVIEW DUE" } else { "" },
                    a.valid_from,
                    a.valid_until,
                    a.review_by
                );
                for p in &a.purposes {
                    println!(
                        "    {} {:<36} {:<9} {}",
                        if p.you_may_request { "*" } else { " " },
                        p.id,
                        p.output,
                        p.datasets.join(", ")
                    );
                }
            }
            println!(
                "(* = you may request; policy sha256 {})",
                list.policy_sha256
            );
            Ok(())
        }
        Command::Extract {
            config,
            gateway,
            agreement,
            purpose,
            datasets,
            fields,
            out,
            format,
        } => {
            let cfg = gateway::client::ClientConfig::load(&config, gateway, token_override())?;
            let req = sharing_proto::v1::ExtractRequest {
                agreement,
                purpose,
                datasets,
                fields,
            };
            let got = runtime()?.block_on(gateway::client::extract(&cfg, req, &out))?;
            match format {
                ExtractFormat::Csv => print_received(&got, &[]),
                ExtractFormat::Parquet => match gateway::client::write_parquet_copies(&got.dir) {
                    Ok(copies) => print_received(&got, &copies),
                    Err(e) => {
                        print_received(&got, &[]);
                        return Err(e);
                    }
                },
            }
            Ok(())
        }
        Command::Aggregate {
            config,
            gateway,
            agreement,
            purpose,
            dataset,
            by,
            out,
        } => {
            let cfg = gateway::client::ClientConfig::load(&config, gateway, token_override())?;
            let req = sharing_proto::v1::AggregateRequest {
                agreement,
                purpose,
                dataset,
                by,
            };
            let got = runtime()?.block_on(gateway::client::aggregate(&cfg, req, &out))?;
            print_received(&got, &[]);
            Ok(())
        }
        Command::Register {
            export,
            pubkey,
            origin,
            out,
        } => register(&export, &pubkey, &origin, &out),
        Command::Explain {
            config,
            gateway,
            agreement,
            purpose,
            dataset,
            fields,
        } => {
            let cfg = gateway::client::ClientConfig::load(&config, gateway, token_override())?;
            let req = sharing_proto::v1::ExplainRequest {
                agreement,
                purpose,
                dataset,
                fields,
            };
            let e = runtime()?.block_on(gateway::client::explain(&cfg, req))?;
            if e.allowed {
                println!(
                    "ALLOWED ({} output; audit entry {})",
                    e.output, e.audit_entry
                );
            } else {
                println!(
                    "DENIED by rule {}: {} (audit entry {})",
                    e.rule, e.reason, e.audit_entry
                );
            }
            for f in &e.filter {
                println!("  row filter: {f}");
            }
            for f in &e.fields {
                if f.rule.is_empty() {
                    println!("  {:<32} {}", f.field, f.outcome);
                } else {
                    println!("  {:<32} denied by {}: {}", f.field, f.rule, f.reason);
                }
            }
            if !e.allowed {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn load_policy(
    dir: Option<&std::path::Path>,
    now: time::OffsetDateTime,
) -> Result<(gateway::policy::Policy, skp_core::Catalog)> {
    let catalog = skp_core::Catalog::embedded()?;
    let policy = gateway::policy::Policy::load(dir, &catalog, now)
        .map_err(|e| anyhow::anyhow!("the agreements do not validate:\n{e}"))?;
    Ok((policy, catalog))
}

/// `gateway register`: verify the export, then write the register from its release entries.
fn register(export: &Path, pubkey: &str, origin: &str, out: &Path) -> Result<()> {
    let vk =
        skp_core::checkpoint::VerifierKey::parse(&gateway::audit::client::read_pubkey(pubkey)?)
            .map_err(|e| anyhow::anyhow!("pinned audit key: {e}"))?;
    let bytes =
        std::fs::read(export).with_context(|| format!("cannot read {}", export.display()))?;
    let report = gateway::audit::verify::verify_with(
        &bytes,
        &vk,
        origin,
        None,
        gateway::audit::verify::Mode::Full,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{}: does not verify, no register written: {e}",
            export.display()
        )
    })?;
    let parsed = gateway::audit::export::parse_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", export.display()))?;
    let entries = parsed
        .entries
        .iter()
        .map(|b| gateway::audit::entry::Entry::decode(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: an entry does not decode: {e}", export.display()))?;
    let rows = gateway::register::rows(&entries);
    let source = gateway::register::Source {
        origin: origin.to_owned(),
        size: report.entries,
        root: hex::encode(report.root),
    };
    gateway::register::write(out, &rows, &source)
        .with_context(|| format!("cannot write the register to {}", out.display()))?;
    println!(
        "register: {} release(s) from {} verified entries -> {}/index.html, {}/releases.csv",
        rows.len(),
        report.entries,
        out.display(),
        out.display()
    );
    Ok(())
}

fn policy(cmd: PolicyCommand) -> Result<()> {
    let now = time::OffsetDateTime::now_utc();
    match cmd {
        PolicyCommand::Check { dir } => {
            let (p, _) = load_policy(dir.as_deref(), now)?;
            for a in p.agreements() {
                println!(
                    "{}  v{}  {}  valid {} .. {}  review by {}  ({} purposes)",
                    a.id,
                    a.version,
                    a.title,
                    gateway::service::analyst::rfc3339(a.valid_from),
                    gateway::service::analyst::rfc3339(a.valid_until),
                    gateway::service::analyst::rfc3339(a.review_by),
                    a.purposes.len()
                );
            }
            println!(
                "OK: {} agreements from {}; policy sha256 {}",
                p.agreements().len(),
                p.source(),
                p.sha256()
            );
            Ok(())
        }
        PolicyCommand::Test { dir, tests } => {
            let (p, catalog) = load_policy(dir.as_deref(), now)?;
            let files: Vec<(PathBuf, String)> = match tests {
                Some(t) => gateway::policy::read_toml_dir(&t)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", t.display()))?,
                None => gateway::policy::EMBEDDED_TESTS
                    .iter()
                    .map(|(n, t)| {
                        (
                            std::path::Path::new("policies/tests").join(n),
                            (*t).to_owned(),
                        )
                    })
                    .collect(),
            };
            let report = gateway::policy::golden::run(&files, &p, &catalog);
            for f in &report.failures {
                eprintln!("FAIL {f}");
            }
            println!(
                "{} golden cases passed, {} failed",
                report.passed,
                report.failures.len()
            );
            if report.failures.is_empty() && report.passed > 0 {
                Ok(())
            } else {
                anyhow::bail!("golden decisions differ from the agreements")
            }
        }
        PolicyCommand::Explain {
            dir,
            agreement,
            purpose,
            dataset,
            fields,
            agency,
            sub,
            roles,
            at,
        } => {
            let at = match at {
                Some(t) => {
                    time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| anyhow::anyhow!("--at {t:?}: {e}"))?
                }
                None => now,
            };
            let (p, catalog) = load_policy(dir.as_deref(), now)?;
            let who = gateway::policy::decide::Requester {
                sub,
                agency: Some(agency),
                roles,
            };
            let req = gateway::policy::decide::Request {
                agreement,
                purpose,
                dataset,
                fields,
            };
            let e = gateway::policy::decide::explain(&p, &catalog, &who, &req, at);
            if let Some(d) = &e.denial {
                println!("DENIED by rule {}: {}", d.rule, d.message);
            } else {
                println!(
                    "ALLOWED ({} output)",
                    e.output.map(|o| o.as_str()).unwrap_or("?")
                );
            }
            for c in &e.filter {
                println!("  row filter: {}", gateway::service::analyst::describe(c));
            }
            if !e.persons.is_empty() {
                println!(
                    "  person ids (re-keyed per purpose): {}",
                    e.persons.join(", ")
                );
            }
            for (f, o) in &e.fields {
                match o {
                    gateway::policy::decide::FieldOutcome::Keep => println!("  {f:<32} keep"),
                    gateway::policy::decide::FieldOutcome::Generalised(t) => {
                        println!("  {f:<32} generalised: {}", t.name())
                    }
                    gateway::policy::decide::FieldOutcome::Denied(d) => {
                        println!("  {f:<32} denied by {}: {}", d.rule, d.message)
                    }
                }
            }
            if e.denial.is_some() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn audit(cmd: AuditCommand) -> Result<()> {
    use gateway::audit::client::{self, AuditorConfig};
    match cmd {
        AuditCommand::Log {
            config,
            gateway,
            from,
            to,
            actor,
            agency,
            action,
            agreement,
            purpose,
            decision,
            start,
            limit,
            json,
        } => {
            let cfg = AuditorConfig::load_with(&config, gateway, token_override())?;
            let q = sharing_proto::v1::AuditQuery {
                from_time: from.unwrap_or_default(),
                to_time: to.unwrap_or_default(),
                actor: actor.unwrap_or_default(),
                agency: agency.unwrap_or_default(),
                action: action.unwrap_or_default(),
                agreement: agreement.unwrap_or_default(),
                purpose: purpose.unwrap_or_default(),
                decision: decision.unwrap_or_default(),
                limit,
                start,
            };
            let n = runtime()?.block_on(client::log(&cfg, q, json))?;
            if !json {
                eprintln!("{n} entries");
            }
            Ok(())
        }
        AuditCommand::Export {
            config,
            gateway,
            out,
        } => {
            let cfg = AuditorConfig::load_with(&config, gateway, token_override())?;
            let cp = runtime()?.block_on(client::export(&cfg, &out))?;
            println!(
                "exported {} entries to {}; root {} (signed checkpoint verified)",
                cp.size,
                out.display(),
                hex::encode(cp.root)
            );
            Ok(())
        }
        AuditCommand::Verify {
            file,
            pubkey,
            checkpoint,
            origin,
            thorough,
        } => {
            let vk = skp_core::checkpoint::VerifierKey::parse(&client::read_pubkey(&pubkey)?)
                .map_err(|e| anyhow::anyhow!("{pubkey}: {e}"))?;
            let bytes = std::fs::read(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let old = match &checkpoint {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?,
                ),
                None => None,
            };
            let mode = if thorough {
                gateway::audit::verify::Mode::Full
            } else {
                gateway::audit::verify::Mode::Fast
            };
            let report =
                gateway::audit::verify::verify_with(&bytes, &vk, &origin, old.as_deref(), mode)
                    .map_err(|e| anyhow::anyhow!("{}: VERIFICATION FAILED: {e}", file.display()))?;
            println!(
                "{}: OK: {} entries, root {}, signed by {}",
                file.display(),
                report.entries,
                hex::encode(report.root),
                vk.name()
            );
            if let Some(n) = report.old_checked {
                println!("consistent with the kept checkpoint of {n} entries");
            }
            Ok(())
        }
        AuditCommand::VerifyRelease {
            dir,
            pubkey,
            origin,
            online,
            config,
            gateway,
        } => {
            use gateway::release::manifest;
            let vk = skp_core::checkpoint::VerifierKey::parse(&client::read_pubkey(&pubkey)?)
                .map_err(|e| anyhow::anyhow!("{pubkey}: {e}"))?;
            let v = manifest::verify_release(&dir, &vk, &origin)
                .map_err(|e| anyhow::anyhow!("{}: VERIFICATION FAILED: {e}", dir.display()))?;
            println!(
                "{}: OK: {} release {} under {} / {}: {} file(s), {} rows; manifest bound to audit entry {} in the signed log of {} entries (root {})",
                dir.display(),
                v.kind,
                v.release_id,
                v.agreement.id,
                v.agreement.purpose,
                v.files,
                v.rows,
                v.entry_index,
                v.checkpoint_size,
                v.root
            );
            if v.parquet_copies > 0 {
                println!(
                    "{}: {} Parquet copy(ies) hold exactly the rows of their verified CSV files",
                    dir.display(),
                    v.parquet_copies
                );
            }
            if online {
                let cfg = AuditorConfig::load_with(&config, gateway, token_override())?;
                let bytes = std::fs::read(dir.join(manifest::MANIFEST_FILE))?;
                let m = manifest::Manifest::parse(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
                let old = skp_core::checkpoint::open(&m.audit.checkpoint, &vk, &origin)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let now = runtime()?.block_on(client::consistent_with(&cfg, &old))?;
                println!(
                    "the gateway's log now ({} entries, root {}) is consistent with it",
                    now.size,
                    hex::encode(now.root)
                );
            }
            Ok(())
        }
        AuditCommand::Person {
            config,
            gateway,
            tokens,
        } => {
            let cfg = AuditorConfig::load_with(&config, gateway, token_override())?;
            let mut parsed = Vec::new();
            for t in &tokens {
                let (kind, hex_text) = t.split_once(':').ok_or_else(|| {
                    anyhow::anyhow!(
                        "--token {t:?}: write KIND:HEX, e.g. nhs:3f2a… (from `agent person-token`)"
                    )
                })?;
                let bytes = hex::decode(hex_text.trim())
                    .map_err(|_| anyhow::anyhow!("--token {kind}:…: the token is not hex"))?;
                parsed.push((kind.to_owned(), bytes));
            }
            let r = runtime()?.block_on(gateway::client::person_releases(&cfg.client, parsed))?;
            println!(
                "{} stored record(s) carry the token(s); {} release(s) included this person (lookup audited as entry {})",
                r.records_found,
                r.releases.len(),
                r.audit_entry
            );
            for rel in &r.releases {
                println!(
                    "  {}  {} {:<9} {} / {}  to {}  datasets {}  audit entry {}",
                    rel.time,
                    rel.release_id,
                    rel.kind,
                    rel.agreement,
                    rel.purpose,
                    rel.requester,
                    rel.datasets.join(","),
                    rel.audit_entry
                );
            }
            Ok(())
        }
        AuditCommand::Prove {
            config,
            gateway,
            entry,
        } => {
            let cfg = AuditorConfig::load_with(&config, gateway, token_override())?;
            let p = runtime()?.block_on(client::prove(&cfg, entry))?;
            println!("entry {entry}: {}", String::from_utf8_lossy(&p.entry));
            println!("leaf hash: {}", hex::encode(p.leaf));
            println!(
                "inclusion proof ({} hashes) in the tree of {} entries:",
                p.path.len(),
                p.checkpoint.size
            );
            for h in &p.path {
                println!("  {}", hex::encode(h));
            }
            println!(
                "root {} (signed checkpoint verified): entry {entry} is in the log",
                hex::encode(p.checkpoint.root)
            );
            Ok(())
        }
        AuditCommand::TreeHead {
            config,
            gateway,
            save,
        } => {
            let cfg = AuditorConfig::load_with(&config, gateway, token_override())?;
            let cp = runtime()?.block_on(client::tree_head(&cfg, save.as_deref()))?;
            println!(
                "{} entries, root {} (signature verified)",
                cp.size,
                hex::encode(cp.root)
            );
            if let Some(p) = save {
                println!("signed checkpoint saved to {}", p.display());
            }
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_tracing(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GATEWAY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sled=warn,h2=warn,tower=warn")));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().flatten_event(true).init(),
    }
}
