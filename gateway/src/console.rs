//! The console listener: HTTPS (rustls, the gateway's own certificate, no client certificate
//! asked), HTTP/1.1, separate from the gRPC port. Serves `GET /metrics` (Prometheus text
//! format, [`crate::metrics`]) to a caller with a bearer JWT of role `auditor` or `admin`;
//! anything else is refused (401 without a valid token, 403 without the role, 404 for another
//! path). Never serves a field value or token of a record.

use crate::jwt::JwtVerifier;
use crate::jwt::Role;
use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Starts the console on `addr`; returns the bound address. Connections are served until the
/// process ends.
pub async fn start(
    addr: SocketAddr,
    cert: &Path,
    key: &Path,
    jwt: Arc<JwtVerifier>,
    audit: crate::audit::log::AuditLog,
) -> Result<SocketAddr> {
    let certs = crate::tls::read_certs(cert)?;
    let key = crate::tls::read_key(key)?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the console's TLS certificate")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (console)"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, jwt, audit) = (acceptor.clone(), jwt.clone(), audit.clone());
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
                let Ok(Ok(tls)) = handshake.await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req| {
                    let (jwt, audit) = (jwt.clone(), audit.clone());
                    async move { Ok::<_, std::convert::Infallible>(handle(&req, &jwt, &audit)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    tracing::info!(addr = %bound, "console listening (HTTPS: /metrics)");
    Ok(bound)
}

fn handle<B>(
    req: &Request<B>,
    jwt: &JwtVerifier,
    audit: &crate::audit::log::AuditLog,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    if req.method() != hyper::Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let now = time::OffsetDateTime::now_utc();
    let token = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(claims) = token.and_then(|t| jwt.verify(t.trim(), now).ok()) else {
        return reply(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "a bearer JWT of the partnership's identity provider is required\n".into(),
        );
    };
    if !claims
        .roles
        .iter()
        .any(|r| matches!(r, Role::Auditor | Role::Admin))
    {
        return reply(
            StatusCode::FORBIDDEN,
            "text/plain",
            "the metrics need the role auditor or admin\n".into(),
        );
    }
    let body = crate::metrics::global().render(audit.size(), now.unix_timestamp());
    reply(StatusCode::OK, "text/plain; version=0.0.4", body)
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
