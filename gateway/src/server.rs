//! `gateway serve`: loads config, catalog and store, terminates TLS itself (for CRLs and client
//! identities) and serves the gRPC services, health and reflection until told to stop.

use crate::config::GatewayConfig;
use crate::service::agent::AgentSvc;
use crate::store::Store;
use anyhow::{Context, Result};
use sharing_proto::v1::agent_service_server::AgentServiceServer;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A gateway running in this process.
pub struct RunningGateway {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The store, for read-only inspection (counts).
    pub store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningGateway {
    /// Stops accepting, lets open calls finish, and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.context("server task panicked")?
    }

    /// Waits until the server ends (after a stop signal).
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("server task panicked")?
    }
}

/// Starts the gateway on `config.listen` (or `listen` if given). Returns once it is listening.
pub async fn start(config: &GatewayConfig, listen: Option<SocketAddr>) -> Result<RunningGateway> {
    let catalog = Arc::new(config.load_catalog()?);
    let store = Store::open(&config.data_dir)
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;
    let tls =
        crate::tls::server_config(&config.ca, &config.cert, &config.key, config.crl.as_deref())?;
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
    let agent = AgentServiceServer::new(AgentSvc::new(
        catalog.clone(),
        store.clone(),
        config.trust_domain.clone(),
    ))
    .max_decoding_message_size(config.max_message_bytes)
    .max_encoding_message_size(config.max_message_bytes);

    let incoming = crate::tls::accept_loop(
        listener,
        tls,
        config.handshake_timeout,
        config.max_handshakes,
    );
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .timeout(std::time::Duration::from_secs(600))
        .add_service(health)
        .add_service(reflection)
        .add_service(agent);
    let datasets = catalog.datasets().count();
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            })
            .await
            .context("gRPC server failed")
    });
    tracing::info!(%addr, datasets, catalog_sha256 = %catalog.sha256(), "gateway listening");
    Ok(RunningGateway {
        addr,
        store,
        stop: Some(stop_tx),
        task,
    })
}

/// Runs the gateway until SIGTERM or Ctrl-C, then shuts down cleanly.
pub async fn serve(config: &GatewayConfig, listen: Option<SocketAddr>) -> Result<()> {
    let running = start(config, listen).await?;
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
