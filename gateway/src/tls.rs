//! TLS termination: a rustls server config (TLS 1.3 only) whose client verifier trusts only the
//! partnership CA and honours CRLs, and an accept loop that hands finished handshakes to tonic.
//!
//! Client certificates are optional at the handshake so one port can later also serve analysts
//! (JWT); a certificate that is presented must chain to the partnership CA, be in date and not
//! be revoked, or the handshake fails. Services that need an agent certificate check for it.

use crate::revocation::{CrlPoll, CrlSet, CrlWatch};
use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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

/// Builds the server TLS config, with the CRLs of `crl` (validated as at start-up) if given.
/// The CRL file is read once; [`ServerTls`] also follows later changes.
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crl: Option<&Path>,
) -> Result<rustls::ServerConfig> {
    let identity = Identity::load(ca, cert, key)?;
    let crls = match crl {
        Some(crl) => Some(CrlSet::load(crl, &identity.ca)?),
        None => None,
    };
    identity.server_config(crls.as_ref())
}

/// The server TLS config in force. With a CRL file, each [`ServerTls::acceptor`] call (one per
/// new connection) first looks whether the file changed (one `stat`) and, if so, puts the new
/// CRLs in force for this and later handshakes, or keeps the last valid ones and logs why.
/// Connections already established are not cut. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    inner: Arc<Mutex<TlsState>>,
}

struct TlsState {
    acceptor: TlsAcceptor,
    /// What a rebuild needs: `None` for a fixed config (no CRL file to follow).
    reload: Option<(Identity, CrlWatch)>,
    /// CRL loads and refusals not yet audited.
    events: Vec<CrlEvent>,
}

/// A CRL put in force (`in_force`) or a CRL file refused, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlEvent {
    /// Whether a CRL was put in force (false: the file was refused; the last one stays).
    pub in_force: bool,
    /// What happened: file, CRL number, revoked count, next update, or why it was refused.
    pub reason: String,
}

fn loaded(watch: &CrlWatch, what: &str) -> CrlEvent {
    let set = watch.in_force();
    CrlEvent {
        in_force: true,
        reason: format!(
            "{what}: {} (CRL number {}, {} revoked, next update {}{})",
            watch.path().display(),
            set.number(),
            set.revoked(),
            set.next_update(),
            if set.expired(time::OffsetDateTime::now_utc()) {
                "; PAST its next update: every agent certificate is refused"
            } else {
                ""
            }
        ),
    }
}

impl ServerTls {
    /// Loads the server identity and, if given, the CRL file; an invalid CRL file is an error.
    /// Without a CRL file, agent certificates are not checked for revocation (logged).
    pub fn load(ca: &Path, cert: &Path, key: &Path, crl: Option<&Path>) -> Result<ServerTls> {
        let identity = Identity::load(ca, cert, key)?;
        let Some(crl) = crl else {
            tracing::warn!(
                "no [tls] crl in the gateway config: agent certificates are not checked for revocation"
            );
            return Ok(ServerTls::from(identity.server_config(None)?));
        };
        let watch = CrlWatch::open(crl, identity.ca.clone())
            .map_err(|e| anyhow::anyhow!("[tls] crl: {e}"))?;
        let config = identity.server_config(Some(watch.in_force()))?;
        log_in_force(&watch, "CRL loaded");
        let events = vec![loaded(&watch, "CRL loaded")];
        Ok(ServerTls {
            inner: Arc::new(Mutex::new(TlsState {
                acceptor: TlsAcceptor::from(Arc::new(config)),
                reload: Some((identity, watch)),
                events,
            })),
        })
    }

    /// CRL loads and refusals since the last call, oldest first, for the audit log.
    pub fn take_events(&self) -> Vec<CrlEvent> {
        let mut state = crate::unpoisoned(self.inner.lock());
        std::mem::take(&mut state.events)
    }

    /// The acceptor for a new connection, after putting a changed CRL file in force.
    pub fn acceptor(&self) -> TlsAcceptor {
        let mut state = crate::unpoisoned(self.inner.lock());
        let TlsState {
            acceptor,
            reload,
            events,
        } = &mut *state;
        if let Some((identity, watch)) = reload {
            match watch.poll() {
                CrlPoll::Unchanged => {}
                CrlPoll::Reloaded => match identity.server_config(Some(watch.in_force())) {
                    Ok(config) => {
                        *acceptor = TlsAcceptor::from(Arc::new(config));
                        log_in_force(watch, "CRL reloaded");
                        events.push(loaded(watch, "CRL reloaded"));
                    }
                    Err(e) => {
                        tracing::error!(
                            file = %watch.path().display(),
                            error = %format!("{e:#}"),
                            "cannot rebuild the TLS config with the new CRL; the previous CRL stays in force"
                        );
                        events.push(CrlEvent {
                            in_force: false,
                            reason: format!(
                                "CRL {} could not be put in force ({e:#}); the previous CRL stays in force",
                                watch.path().display()
                            ),
                        });
                    }
                },
                CrlPoll::Refused(e) => {
                    tracing::error!(
                        file = %watch.path().display(),
                        error = %e,
                        "CRL file refused; the last valid CRL stays in force"
                    );
                    events.push(CrlEvent {
                        in_force: false,
                        reason: format!(
                            "CRL file refused ({e}); the last valid CRL stays in force"
                        ),
                    });
                }
            }
        }
        acceptor.clone()
    }
}

impl From<rustls::ServerConfig> for ServerTls {
    /// A fixed config (no CRL file followed).
    fn from(config: rustls::ServerConfig) -> Self {
        ServerTls {
            inner: Arc::new(Mutex::new(TlsState {
                acceptor: TlsAcceptor::from(Arc::new(config)),
                reload: None,
                events: Vec::new(),
            })),
        }
    }
}

fn log_in_force(watch: &CrlWatch, what: &str) {
    let set = watch.in_force();
    let next_update = set.next_update();
    let file = watch.path().display();
    if set.expired(time::OffsetDateTime::now_utc()) {
        tracing::error!(%file, crl_number = %set.number(), %next_update,
            "{what}, but it is past its nextUpdate: every agent certificate is refused until a fresh CRL is installed");
    } else {
        tracing::info!(%file, crl_number = %set.number(), revoked = set.revoked(), %next_update, "{what}");
    }
}

/// The partnership CA and the gateway's own certificate chain and key.
struct Identity {
    ca: Vec<CertificateDer<'static>>,
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    paths: (PathBuf, PathBuf),
}

impl Identity {
    fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Identity> {
        install_crypto_provider();
        let ca_certs = read_certs(ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for c in &ca_certs {
            roots
                .add(c.clone())
                .with_context(|| format!("{} is not a usable CA certificate", ca.display()))?;
        }
        Ok(Identity {
            ca: ca_certs,
            roots: Arc::new(roots),
            chain: read_certs(cert)?,
            key: read_key(key)?,
            paths: (cert.to_path_buf(), key.to_path_buf()),
        })
    }

    /// TLS 1.3 only, ALPN h2, client certificates verified by
    /// [`crate::revocation::client_verifier`].
    fn server_config(&self, crls: Option<&CrlSet>) -> Result<rustls::ServerConfig> {
        let verifier = crate::revocation::client_verifier(self.roots.clone(), crls)
            .context("cannot build the client certificate verifier")?;
        let mut cfg =
            rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
                .with_client_cert_verifier(verifier)
                .with_single_cert(self.chain.clone(), self.key.clone_key())
                .with_context(|| {
                    format!(
                        "{} and {} do not form a usable server identity",
                        self.paths.0.display(),
                        self.paths.1.display()
                    )
                })?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(cfg)
    }
}

/// Accepts TCP connections, runs TLS handshakes (each bounded by `timeout`) and yields the
/// finished streams. Failed handshakes are logged with the peer address and dropped.
pub fn accept_loop(
    listener: TcpListener,
    tls: impl Into<ServerTls>,
    timeout: Duration,
    max_handshakes: usize,
    audit: Option<crate::audit::log::AuditLog>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<tokio::net::TcpStream>, std::io::Error>>
{
    let tls: ServerTls = tls.into();
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
            let acceptor = tls.acceptor();
            if let Some(audit) = &audit {
                audit_crl_events(audit, tls.take_events()).await;
            }
            let tx = tx.clone();
            let audit = audit.clone();
            tokio::spawn(async move {
                let reason = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        drop(permit);
                        let _ = tx.send(Ok(stream)).await;
                        return;
                    }
                    Ok(Err(e)) => format!("TLS handshake refused: {}", refusal_reason(&e)),
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

/// Appends an entry (action `crl_load`) for each CRL put in force or refused.
pub async fn audit_crl_events(audit: &crate::audit::log::AuditLog, events: Vec<CrlEvent>) {
    use crate::audit::entry::{Action, Actor, Decision, Entry};
    for ev in events {
        let decision = if ev.in_force {
            Decision::Allow
        } else {
            Decision::Deny
        };
        let mut e = Entry::new(Actor::gateway(), Action::CrlLoad, decision);
        e.reason = Some(ev.reason.chars().take(500).collect());
        if let Err(err) = audit.append_one(e).await {
            tracing::error!(error = %err, "cannot audit a CRL load");
        }
    }
}

/// Why a handshake failed, in words an operator can act on (revocation refusals spelled out).
fn refusal_reason(e: &std::io::Error) -> String {
    use rustls::CertificateError as C;
    let Some(rustls::Error::InvalidCertificate(cert)) =
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
    else {
        return e.to_string();
    };
    match cert {
        C::Revoked => "client certificate revoked (listed in the CRL)".to_owned(),
        C::UnknownRevocationStatus => {
            "client certificate's revocation status is unknown (no CRL from its issuer in [tls] crl)"
                .to_owned()
        }
        C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => format!(
            "the CRL in [tls] crl is past its nextUpdate, so every agent certificate is refused until a fresh CRL is installed ({cert})"
        ),
        other => format!("invalid client certificate: {other}"),
    }
}
