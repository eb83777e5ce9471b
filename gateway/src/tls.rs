//! TLS termination: a rustls server config (TLS 1.3 only) whose client verifier trusts only the
//! partnership CA and honours CRLs, and an accept loop that hands finished handshakes to tonic.
//!
//! Client certificates are optional at the handshake so one port can later also serve analysts
//! (JWT); a certificate that is presented must chain to the partnership CA, be in date and not
//! be revoked, or the handshake fails. Services that need an agent certificate check for it.

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Installs the process-wide rustls crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} holds a malformed PEM certificate", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("cannot read a PEM private key from {}", path.display()))
}

/// Builds the server TLS config.
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crl: Option<&Path>,
) -> Result<rustls::ServerConfig> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca)? {
        roots
            .add(c)
            .with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
    }
    let mut builder = WebPkiClientVerifier::builder(Arc::new(roots));
    if let Some(crl) = crl {
        let crls = CertificateRevocationListDer::pem_file_iter(crl)
            .with_context(|| format!("cannot read CRLs from {}", crl.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{} holds a malformed PEM CRL", crl.display()))?;
        builder = builder.with_crls(crls);
    }
    let verifier = builder
        .allow_unauthenticated()
        .build()
        .context("cannot build the client certificate verifier")?;
    let mut cfg = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .with_context(|| {
            format!(
                "{} and {} do not form a usable server identity",
                cert.display(),
                key.display()
            )
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// Accepts TCP connections, runs TLS handshakes (each bounded by `timeout`) and yields the
/// finished streams. Failed handshakes are logged with the peer address and dropped.
pub fn accept_loop(
    listener: TcpListener,
    config: rustls::ServerConfig,
    timeout: Duration,
    max_handshakes: usize,
    audit: Option<crate::audit::log::AuditLog>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<tokio::net::TcpStream>, std::io::Error>>
{
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(tokio::sync::Semaphore::new(max_handshakes));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "connection refused: too many TLS handshakes in progress");
                continue;
            };
            if tx.is_closed() {
                break;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let audit = audit.clone();
            tokio::spawn(async move {
                let reason = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        drop(permit);
                        let _ = tx.send(Ok(stream)).await;
                        return;
                    }
                    Ok(Err(e)) => format!("TLS handshake refused: {e}"),
                    Err(_) => "TLS handshake timed out".to_string(),
                };
                tracing::warn!(%peer, %reason, "connection refused");
                if let Some(audit) = audit {
                    use crate::audit::entry::{Action, Actor, Decision, Entry};
                    let mut e = Entry::new(Actor::anonymous(), Action::AuthFailure, Decision::Deny);
                    e.reason = Some(reason.chars().take(300).collect());
                    e.peer = Some(peer.to_string());
                    if let Err(err) = audit.append_one(e).await {
                        tracing::error!(error = %err, "cannot audit a refused connection");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
