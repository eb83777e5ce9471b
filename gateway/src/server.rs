//! `gateway serve`: loads config, catalog and store, terminates TLS itself (for CRLs and client
//! identities) and serves the gRPC services, health and reflection until told to stop.

use crate::audit::entry::{Action, Actor, Decision, Entry};
use crate::audit::log::AuditLog;
use crate::config::GatewayConfig;
use crate::service::Shared;
use crate::service::agent::AgentSvc;
use crate::service::analyst::AnalystSvc;
use crate::service::audit::AuditSvc;
use crate::service::deadline::Deadlined;
use crate::store::Store;
use anyhow::{Context, Result, bail};
use sharing_proto::v1::agent_service_server::AgentServiceServer;
use sharing_proto::v1::analyst_service_server::AnalystServiceServer;
use sharing_proto::v1::audit_service_server::AuditServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A gateway running in this process.
pub struct RunningGateway {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The console's bound address, when `[console] listen` is set.
    pub console: Option<SocketAddr>,
    /// The store, for read-only inspection (counts).
    pub store: Store,
    /// The audit log.
    pub audit: AuditLog,
    /// What the services share (policy, clock, verifiers).
    pub shared: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningGateway {
    /// Stops accepting, lets open calls finish, and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let served = self.task.await.context("server task panicked")?;
        // The store's writer finishes first (its last try at naming a refused group appends
        // to the audit log), then the audit log's: the process may exit as soon as this returns,
        // and must not cut either in the middle of a write.
        self.store.shutdown().await;
        let stop = Entry::new(Actor::gateway(), Action::GatewayStop, Decision::Allow);
        match self.audit.append_one(stop).await {
            Ok(_) => {
                if let Err(e) = self.audit.checkpoint() {
                    tracing::warn!(error = %e, "cannot sign the final audit checkpoint");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot audit the gateway stop"),
        }
        self.audit.shutdown().await;
        served
    }

    /// Waits until the server ends (after a stop signal).
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("server task panicked")?
    }
}

/// Starts the gateway on `config.listen` (or `listen` if given). Returns once it is listening.
pub async fn start(config: &GatewayConfig, listen: Option<SocketAddr>) -> Result<RunningGateway> {
    let catalog = Arc::new(config.load_catalog()?);
    let audit_key = load_audit_key(&config.audit_key)?;
    let audit = AuditLog::open(&config.data_dir, audit_key, &config.audit_origin)
        .with_context(|| format!("cannot open the audit log in {}", config.data_dir.display()))?;
    let store = Store::open_audited(&config.data_dir, Some(audit.clone()))
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    check_private(&config.key, "TLS private key")?;
    let tls =
        crate::tls::ServerTls::load(&config.ca, &config.cert, &config.key, config.crl.as_deref())?;
    let addr = listen.unwrap_or(config.listen);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServiceServer<AgentSvc>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sharing_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    let jwt = crate::jwt::JwtVerifier::load(&config.jwt)
        .map_err(|e| anyhow::anyhow!("[jwt] in the gateway config: {e}"))?;
    let policy = load_policy(config, &catalog, &audit).await?;
    let release_key = load_release_key(&config.release_key)?;
    let releaser = crate::release::Releaser::new(
        store.clone(),
        audit.clone(),
        catalog.clone(),
        release_key,
        &config.data_dir,
    )
    .with_context(|| {
        format!(
            "cannot open the release registry in {}",
            config.data_dir.join("releases").display()
        )
    })?
    .with_max_rows(config.limits.max_release_rows);
    let shared = Shared {
        releaser,
        catalog: catalog.clone(),
        store: store.clone(),
        audit: audit.clone(),
        trust_domain: config.trust_domain.clone(),
        policy: Arc::new(std::sync::RwLock::new(Arc::new(policy))),
        jwt: Arc::new(jwt),
        clock: Arc::new(time::OffsetDateTime::now_utc),
        limits: crate::limits::Limiter::new(config.limits.clone()),
    };
    let agent = AgentServiceServer::new(AgentSvc::new(shared.clone()))
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    let analyst = AnalystServiceServer::new(AnalystSvc::new(shared.clone()))
        .max_decoding_message_size(1024 * 1024)
        .max_encoding_message_size(config.max_message_bytes);
    health_reporter
        .set_serving::<AnalystServiceServer<AnalystSvc>>()
        .await;
    let auditor = AuditServiceServer::new(AuditSvc::new(shared.clone()))
        .max_decoding_message_size(64 * 1024)
        .max_encoding_message_size(config.max_message_bytes);
    health_reporter
        .set_serving::<AuditServiceServer<AuditSvc>>()
        .await;

    let mut start = Entry::new(Actor::gateway(), Action::GatewayStart, Decision::Allow);
    start.reason = Some(format!(
        "gateway {} started; catalog sha256 {}",
        env!("CARGO_PKG_VERSION"),
        catalog.sha256()
    ));
    audit
        .append_one(start)
        .await
        .context("cannot write the start entry to the audit log")?;

    crate::tls::audit_crl_events(&audit, tls.take_events()).await;
    let incoming = crate::tls::accept_loop(
        listener,
        tls,
        config.handshake_timeout,
        config.max_handshakes,
        Some(audit.clone()),
    );
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // The whole-call deadline (`limits.request_timeout_secs`) is the services' own, not tonic's
    // `Server::timeout`: that one answers `CANCELLED` without naming the setting and audits
    // nothing. Tonic's own timer for a caller's `grpc-timeout` wraps these layers, so it starts
    // just before the stamp dates the call; the services answer `CALLER_MARGIN` early so that
    // their `DEADLINE_EXCEEDED` still comes first (see `service::deadline`).
    let router = tonic::transport::Server::builder()
        .layer(tonic::service::InterceptorLayer::new(
            crate::service::deadline::stamp,
        ))
        .max_concurrent_streams(config.limits.max_connection_streams)
        .add_service(health)
        .add_service(reflection)
        .add_service(Deadlined::new(agent, shared.clone()))
        .add_service(Deadlined::new(analyst, shared.clone()))
        .add_service(Deadlined::new(auditor, shared.clone()));
    let datasets = catalog.datasets().count();
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            })
            .await
            .context("gRPC server failed")
    });
    tracing::info!(%addr, datasets, catalog_sha256 = %catalog.sha256(), audit_entries = audit.size(), "gateway listening");
    let console = match config.console_listen {
        Some(c) => Some(crate::console::start(c, &config.cert, &config.key, shared.clone()).await?),
        None => None,
    };
    Ok(RunningGateway {
        addr,
        console,
        store,
        audit,
        shared,
        stop: Some(stop_tx),
        task,
    })
}

/// Loads the agreements (the configured directory, or the ones compiled in) and audits the
/// load. A policy that does not validate refuses start-up (fail closed).
async fn load_policy(
    config: &GatewayConfig,
    catalog: &skp_core::Catalog,
    audit: &AuditLog,
) -> Result<crate::policy::Policy> {
    let now = time::OffsetDateTime::now_utc();
    let loaded = crate::policy::Policy::load(config.policy_dir.as_deref(), catalog, now);
    let mut e = Entry::new(Actor::gateway(), Action::PolicyLoad, Decision::Allow);
    match &loaded {
        Ok(p) => {
            e.reason = Some(format!(
                "loaded {} agreements from {}; policy sha256 {}",
                p.agreements().len(),
                p.source(),
                p.sha256()
            ));
        }
        Err(err) => {
            e.decision = Decision::Deny;
            e.reason = Some(format!(
                "policy refused: {}",
                truncate(&err.to_string(), 900)
            ));
        }
    }
    audit
        .append_one(e)
        .await
        .context("cannot write the policy load to the audit log")?;
    loaded.map_err(|e| {
        anyhow::anyhow!("the agreements do not validate; the gateway will not start:\n{e}")
    })
}

/// Reloads the agreements (SIGHUP): the new set replaces the old only if it validates; either
/// way the attempt is audited. Returns whether the new set is in force.
pub async fn reload_policy(config: &GatewayConfig, shared: &Shared) -> bool {
    let now = shared.now();
    let loaded = crate::policy::Policy::load(config.policy_dir.as_deref(), &shared.catalog, now);
    let mut e = Entry::new(Actor::gateway(), Action::PolicyLoad, Decision::Allow);
    let ok = match loaded {
        Ok(p) => {
            e.reason = Some(format!(
                "reloaded {} agreements from {}; policy sha256 {}",
                p.agreements().len(),
                p.source(),
                p.sha256()
            ));
            tracing::info!(sha256 = %p.sha256(), agreements = p.agreements().len(), "policy reloaded");
            *crate::unpoisoned(shared.policy.write()) = Arc::new(p);
            true
        }
        Err(err) => {
            tracing::error!(error = %err, "policy reload refused; the previous policy stays in force");
            e.decision = Decision::Deny;
            e.reason = Some(format!(
                "reload refused, previous policy {} stays in force: {}",
                shared.policy().sha256(),
                truncate(&err.to_string(), 900)
            ));
            false
        }
    };
    if let Err(err) = shared.audit.append_one(e).await {
        tracing::error!(error = %err, "cannot audit the policy reload");
    }
    ok
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_owned();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Reads the Ed25519 audit signing key, refusing a file others can read.
fn load_release_key(path: &std::path::Path) -> Result<crate::linkage::ReleaseKey> {
    check_private(path, "release key")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the release key {}", path.display()))?;
    crate::linkage::ReleaseKey::from_hex(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; `gateway dev-certs` writes one as release.key",
            path.display()
        )
    })
}

/// Refuses a key file other users can read.
fn check_private(path: &std::path::Path, what: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{}: the {what} is readable by other users; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

fn load_audit_key(path: &std::path::Path) -> Result<skp_core::checkpoint::SigningKey> {
    check_private(path, "audit signing key")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the audit key {}", path.display()))?;
    skp_core::checkpoint::SigningKey::from_private_text(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "{}: not an audit signing key ({e}); `gateway dev-certs` writes one as audit.key",
            path.display()
        )
    })
}

/// Runs the gateway until SIGTERM or Ctrl-C, then shuts down cleanly.
pub async fn serve(config: &GatewayConfig, listen: Option<SocketAddr>) -> Result<()> {
    let running = start(config, listen).await?;
    // The reload handler is in place before the readiness line, so a SIGHUP sent as soon as
    // the gateway says it is listening reloads rather than kills it.
    #[cfg(unix)]
    {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install the SIGHUP (policy reload) handler")?;
        let shared = running.shared.clone();
        let config = config.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the agreements");
                reload_policy(&config, &shared).await;
            }
        });
    }
    if let Some(c) = running.console {
        println!("console listening on https://{c}/ (pages for auditors; /metrics)");
    }
    println!("gateway listening on {}", running.addr);
    shutdown_signal().await;
    tracing::info!("shutdown requested; finishing open calls");
    running.shutdown().await?;
    tracing::info!("gateway stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
