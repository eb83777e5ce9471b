//! The agent's gRPC client: mutual TLS with the agency certificate, the catalog (fetched from the
//! gateway, cached for when it is unreachable) and sending spooled batches.

use crate::config::AgentConfig;
use anyhow::{Context, Result};
use sharing_proto::v1::agent_service_client::AgentServiceClient;
use sharing_proto::v1::{GetCatalogRequest, IngestBatch, IngestSummary};
use skp_core::Catalog;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Largest message the agent sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Connects to the gateway with the agency's certificate.
pub async fn connect(cfg: &AgentConfig) -> Result<AgentServiceClient<Channel>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(&cfg.ca)
        .with_context(|| format!("cannot read CA certificate {}", cfg.ca.display()))?;
    let cert = std::fs::read(&cfg.cert)
        .with_context(|| format!("cannot read certificate {}", cfg.cert.display()))?;
    let key = std::fs::read(&cfg.key)
        .with_context(|| format!("cannot read key {}", cfg.key.display()))?;
    let host = cfg
        .gateway
        .trim_start_matches("https://")
        .rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .unwrap_or_else(|| "localhost".into());
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(host.trim_matches(['[', ']']));
    let channel = Endpoint::from_shared(cfg.gateway.clone())
        .with_context(|| format!("gateway URL {:?} is not valid", cfg.gateway))?
        .tls_config(tls)
        .context("invalid TLS configuration")?
        .connect_timeout(cfg.connect_timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to the gateway at {}", cfg.gateway))?;
    Ok(AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Fetches the agency's catalog and caches it; falls back to the cache if the gateway cannot be
/// reached, or fails the call in a way worth retrying (it went away after the connection was
/// made), so a push still spools its batches. Returns the catalog and whether it came from the
/// cache.
pub async fn catalog(
    cfg: &AgentConfig,
    client: Option<&mut AgentServiceClient<Channel>>,
) -> Result<(Catalog, bool)> {
    let cache = cfg.state_dir.join("catalog.json");
    if let Some(client) = client {
        match client.get_catalog(GetCatalogRequest {}).await {
            Ok(reply) => return cache_catalog(cfg, &cache, reply.into_inner()),
            Err(s) if is_retryable(&s) => tracing::warn!(
                reason = %describe(&s),
                "the gateway failed while sending the catalog; working from the cached catalog"
            ),
            Err(s) => return Err(status_error("GetCatalog", &s)),
        }
    }
    let text = std::fs::read(&cache).with_context(|| {
        format!("the gateway cannot be reached and there is no cached catalog at {}; run `agent check` once the gateway is up", cache.display())
    })?;
    Ok((
        serde_json::from_slice(&text)
            .with_context(|| format!("{} is corrupt; delete it", cache.display()))?,
        true,
    ))
}

/// Converts the gateway's catalog and caches it.
fn cache_catalog(
    cfg: &AgentConfig,
    cache: &std::path::Path,
    reply: sharing_proto::v1::Catalog,
) -> Result<(Catalog, bool)> {
    let mut datasets = Vec::new();
    for d in &reply.datasets {
        datasets.push(
            skp_core::pbconvert::dataset_from_pb(d)
                .map_err(|e| anyhow::anyhow!("the gateway sent an unusable catalog: {e}"))?,
        );
    }
    let cat = Catalog::from_datasets(datasets, reply.catalog_sha256);
    std::fs::create_dir_all(&cfg.state_dir)?;
    let tmp = cache.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&cat)?)?;
    std::fs::rename(&tmp, cache)?;
    Ok((cat, false))
}

/// Sends batches as one Ingest stream and returns the gateway's summary.
pub async fn send(
    client: &mut AgentServiceClient<Channel>,
    batches: Vec<IngestBatch>,
) -> Result<IngestSummary, tonic::Status> {
    let stream = tokio_stream::iter(batches);
    client.ingest(stream).await.map(|r| r.into_inner())
}

/// Whether a failed call is worth retrying later (the gateway was unreachable or stopping, or
/// asked to slow down: `ResourceExhausted` is its rate or concurrency limit).
pub fn is_retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
            | tonic::Code::Internal
    )
}

/// A failed call in words an agency's IT can act on: the status, the transport's reasons
/// underneath it, and what to do when the gateway refused this agent's certificate at the TLS
/// handshake (revoked, expired, or not from the partnership CA).
pub fn describe(s: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", s.code(), s.message());
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        let t = e.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        src = e.source();
    }
    let hint = if text.contains("CertificateRevoked") {
        Some(
            "the gateway refused this agent's certificate because it is REVOKED (on the \
             partnership's certificate revocation list); ask the partnership admin for a new \
             certificate",
        )
    } else if text.contains("CertificateExpired") {
        Some(
            "the gateway refused this agent's certificate because it has EXPIRED; ask the \
             partnership admin for a new certificate (`agent check` warns 30 days ahead)",
        )
    } else if text.contains("UnknownCA")
        || text.contains("BadCertificate")
        || text.contains("CertificateRequired")
        || text.contains("CertificateUnknown")
    {
        Some(
            "the gateway refused this agent's certificate at the TLS handshake; check `tls.cert` \
             and `tls.key` in the agent config and that the certificate was issued by the \
             partnership CA",
        )
    } else if text.contains("transport error")
        && ["connection closed", "broken pipe", "connection reset"]
            .iter()
            .any(|w| text.contains(w))
    {
        // Under TLS 1.3 the gateway checks the client certificate after the client thinks the
        // handshake is done; its refusal alert can be lost when it closes the connection.
        Some(
            "the gateway closed the connection; if this persists, it may be refusing this \
             agent's certificate (revoked, expired, or not issued by the partnership CA): run \
             `agent check` and ask the partnership admin",
        )
    } else {
        None
    };
    if let Some(h) = hint {
        text.push_str(" — ");
        text.push_str(h);
    }
    text
}

/// An error naming the call and the gateway's reason.
pub fn status_error(call: &str, s: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{call} refused by the gateway ({})", describe(s))
}
