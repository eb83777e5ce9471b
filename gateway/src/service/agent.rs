//! `sharing.v1.AgentService`: the catalog for the calling agency, ingest and withdrawal.
//! The agency is always the one proven by the client certificate.

use super::{ServiceError, status_of};
use crate::auth::peer_agency;
use crate::store::{Outcome, Store};
use crate::validate;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use sharing_proto::v1 as pb;
use sharing_proto::v1::agent_service_server::AgentService;
use skp_core::Catalog;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// Most rejections listed one by one in a summary; the counts always cover all.
pub const MAX_LISTED_REJECTIONS: usize = 10_000;

/// Batches validated and queued for commit ahead of the oldest unacknowledged one.
const PIPELINE_DEPTH: usize = 4;

/// The agent service.
#[derive(Clone)]
pub struct AgentSvc {
    catalog: Arc<Catalog>,
    store: Store,
    trust_domain: String,
}

impl AgentSvc {
    /// A service over a catalog and a store.
    pub fn new(catalog: Arc<Catalog>, store: Store, trust_domain: String) -> Self {
        Self {
            catalog,
            store,
            trust_domain,
        }
    }
}

#[tonic::async_trait]
impl AgentService for AgentSvc {
    async fn get_catalog(
        &self,
        req: Request<pb::GetCatalogRequest>,
    ) -> Result<Response<pb::Catalog>, Status> {
        let agency = peer_agency(&req, &self.trust_domain)?.0;
        let datasets = self
            .catalog
            .owned_by(&agency)
            .map(skp_core::pbconvert::dataset_to_pb)
            .collect();
        Ok(Response::new(pb::Catalog {
            agency: agency.to_string(),
            datasets,
            catalog_sha256: self.catalog.sha256().to_string(),
        }))
    }

    async fn ingest(
        &self,
        req: Request<Streaming<pb::IngestBatch>>,
    ) -> Result<Response<pb::IngestSummary>, Status> {
        let agency = peer_agency(&req, &self.trust_domain)?.0;
        let mut stream = req.into_inner();
        let mut summary = pb::IngestSummary::default();
        let mut per_dataset: BTreeMap<String, pb::DatasetCounts> = BTreeMap::new();
        let mut pending = FuturesOrdered::new();

        loop {
            let batch = match stream.message().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    // Client went away or sent a bad frame: wait for what was queued so its
                    // durability is not cut short, then report.
                    while pending.next().await.is_some() {}
                    return Err(e);
                }
            };
            summary.batches += 1;
            let plan = validate::plan(&self.catalog, &agency, &batch).map_err(|e| {
                tracing::warn!(%agency, dataset = %batch.dataset, reason = %e, "batch refused");
                status_of(ServiceError::from(e))
            })?;
            let dataset = plan.dataset.name.to_string();
            let now = time::OffsetDateTime::now_utc();
            let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
            let mut good = Vec::with_capacity(batch.records.len());
            let counts = per_dataset
                .entry(dataset.clone())
                .or_insert_with(|| pb::DatasetCounts {
                    dataset: dataset.clone(),
                    ..Default::default()
                });
            for (i, rec) in batch.records.into_iter().enumerate() {
                let line = rec.source_line;
                match plan.check(&agency, rec, now_ms) {
                    Ok(r) => good.push(r),
                    Err(p) => {
                        summary.rejected += 1;
                        counts.rejected += 1;
                        if summary.rejections.len() < MAX_LISTED_REJECTIONS {
                            summary.rejections.push(pb::RecordRejection {
                                batch_id: batch.batch_id.chars().take(64).collect(),
                                index: i as u32,
                                source_line: line,
                                field: p.field,
                                reason: p.reason,
                            });
                        }
                    }
                }
            }
            let rx = self
                .store
                .submit(good)
                .await
                .map_err(|e| status_of(e.into()))?;
            pending.push_back(async move { (dataset, rx.await) });
            while pending.len() >= PIPELINE_DEPTH {
                if let Some(r) = pending.next().await {
                    tally(r, &mut summary, &mut per_dataset)?;
                }
            }
        }
        while let Some(r) = pending.next().await {
            tally(r, &mut summary, &mut per_dataset)?;
        }
        summary.per_dataset = per_dataset.into_values().collect();
        tracing::info!(
            %agency,
            batches = summary.batches,
            accepted = summary.accepted,
            duplicates = summary.duplicates,
            replaced = summary.replaced,
            rejected = summary.rejected,
            "ingest finished"
        );
        Ok(Response::new(summary))
    }

    async fn withdraw(
        &self,
        req: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::WithdrawSummary>, Status> {
        let agency = peer_agency(&req, &self.trust_domain)?.0;
        let req = req.into_inner();
        let b = pb::IngestBatch {
            dataset: req.dataset.clone(),
            schema_version: 0,
            ..Default::default()
        };
        // Reuse the ownership checks of ingest (version is not relevant to a withdrawal).
        match validate::plan(&self.catalog, &agency, &b) {
            Ok(_) | Err(validate::BatchError::SchemaVersion { .. }) => {}
            Err(e) => return Err(status_of(e.into())),
        }
        if !matches!(req.reason.as_str(), "erasure" | "rectification") {
            return Err(Status::invalid_argument(
                "reason must be \"erasure\" or \"rectification\"",
            ));
        }
        let mut keys = Vec::with_capacity(req.record_keys.len());
        for k in &req.record_keys {
            keys.push(<[u8; 32]>::try_from(k.as_slice()).map_err(|_| {
                Status::invalid_argument("every record key must be a 32-byte token")
            })?);
        }
        let c = self
            .store
            .withdraw(&req.dataset, keys)
            .await
            .map_err(|e| status_of(e.into()))?;
        tracing::info!(%agency, dataset = %req.dataset, withdrawn = c.withdrawn, not_found = c.not_found, reason = %req.reason, "withdrawal");
        Ok(Response::new(pb::WithdrawSummary {
            withdrawn: c.withdrawn,
            not_found: c.not_found,
        }))
    }
}

type Committed = (
    String,
    Result<Result<Vec<Outcome>, crate::store::StoreError>, tokio::sync::oneshot::error::RecvError>,
);

fn tally(
    (dataset, r): Committed,
    summary: &mut pb::IngestSummary,
    per_dataset: &mut BTreeMap<String, pb::DatasetCounts>,
) -> Result<(), Status> {
    let outcomes = r
        .map_err(|_| status_of(crate::store::StoreError::Closed.into()))?
        .map_err(|e| status_of(e.into()))?;
    let counts = per_dataset
        .entry(dataset.clone())
        .or_insert_with(|| pb::DatasetCounts {
            dataset,
            ..Default::default()
        });
    for o in outcomes {
        match o {
            Outcome::Accepted => {
                summary.accepted += 1;
                counts.accepted += 1;
            }
            Outcome::Duplicate => {
                summary.duplicates += 1;
                counts.duplicates += 1;
            }
            Outcome::Replaced => {
                summary.replaced += 1;
                counts.replaced += 1;
            }
        }
    }
    Ok(())
}
