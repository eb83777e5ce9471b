//! `sharing.v1.AgentService`: the catalog for the calling agency, ingest and withdrawal.
//! The agency is always the one proven by the client certificate.

use super::{ServiceError, Shared, status_of};
use crate::audit::entry::{Action, Counts, Decision, Entry};
use crate::store::Outcome;
use crate::validate;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use sharing_proto::v1 as pb;
use sharing_proto::v1::agent_service_server::AgentService;
use skp_core::AgencyId;
use std::collections::BTreeMap;
use tonic::{Request, Response, Status, Streaming};

/// Most rejections listed one by one in a summary; the counts always cover all.
pub const MAX_LISTED_REJECTIONS: usize = 10_000;

/// Batches validated and queued for commit ahead of the oldest unacknowledged one.
const PIPELINE_DEPTH: usize = 4;

/// The agent service.
#[derive(Clone)]
pub struct AgentSvc {
    shared: Shared,
}

impl AgentSvc {
    /// A service over the gateway's shared state.
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }

    /// An entry for an action of `agency` on `dataset`.
    fn entry(&self, agency: &AgencyId, action: Action, decision: Decision, dataset: &str) -> Entry {
        let mut e = Entry::new(
            crate::audit::entry::Actor::agent(agency.as_str(), &self.shared.trust_domain),
            action,
            decision,
        );
        e.datasets = vec![dataset.chars().take(128).collect()];
        e
    }

    /// Audits a refused batch or withdrawal and returns its status: a dataset of another agency
    /// is an authorisation failure, anything else a refused action.
    async fn refuse(
        &self,
        agency: &AgencyId,
        action: Action,
        dataset: &str,
        err: validate::BatchError,
    ) -> Status {
        let kind = if matches!(err, validate::BatchError::NotOwner { .. }) {
            Action::AuthFailure
        } else {
            action
        };
        tracing::warn!(%agency, dataset, reason = %err, "request refused");
        let mut e = self.entry(agency, kind, Decision::Deny, dataset);
        e.reason = Some(err.to_string());
        if let Err(s) = self.shared.record(e).await {
            return s;
        }
        status_of(ServiceError::from(err))
    }
}

#[tonic::async_trait]
impl AgentService for AgentSvc {
    async fn get_catalog(
        &self,
        req: Request<pb::GetCatalogRequest>,
    ) -> Result<Response<pb::Catalog>, Status> {
        let agency = self.shared.require_agent(&req).await?;
        let datasets = self
            .shared
            .catalog
            .owned_by(&agency)
            .map(skp_core::pbconvert::dataset_to_pb)
            .collect();
        Ok(Response::new(pb::Catalog {
            agency: agency.to_string(),
            datasets,
            catalog_sha256: self.shared.catalog.sha256().to_string(),
        }))
    }

    async fn ingest(
        &self,
        req: Request<Streaming<pb::IngestBatch>>,
    ) -> Result<Response<pb::IngestSummary>, Status> {
        let agency = self.shared.require_agent(&req).await?;
        let actor = crate::audit::entry::Actor::agent(agency.as_str(), &self.shared.trust_domain);
        let admitted = self.shared.limits.agency_call(agency.as_str(), true);
        let _permit = self.shared.admit(&req, actor.clone(), admitted).await?;
        let peer = req.remote_addr();
        let limits = self.shared.limits.limits().clone();
        let mut stream = req.into_inner();
        let mut summary = pb::IngestSummary::default();
        let mut per_dataset: BTreeMap<String, pb::DatasetCounts> = BTreeMap::new();
        let mut pending = FuturesOrdered::new();

        loop {
            let next = tokio::time::timeout(limits.stream_idle_timeout, stream.message()).await;
            let Ok(next) = next else {
                // A silent stream holds a place: close it. What it sent before is stored.
                while pending.next().await.is_some() {}
                let r = crate::limits::Refusal {
                    limit: "limits.stream_idle_secs",
                    message: format!(
                        "no batch for {} s, so the stream was closed; batches sent before are \
                         stored (resend them: duplicates are recognised)",
                        limits.stream_idle_timeout.as_secs()
                    ),
                    audit: Some(0),
                };
                let status = Status::deadline_exceeded(format!("{}: {}", r.limit, r.message));
                return Err(self.shared.limit_refused(actor, peer, &r, status).await);
            };
            let batch = match next {
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
            if batch.records.len() > limits.max_batch_records {
                while pending.next().await.is_some() {}
                let r = crate::limits::Refusal {
                    limit: "limits.max_batch_records",
                    message: format!(
                        "a batch of {} records is larger than the gateway accepts ({}); send \
                         smaller batches (agent.toml push.batch_size)",
                        batch.records.len(),
                        limits.max_batch_records
                    ),
                    audit: Some(0),
                };
                let status = Status::invalid_argument(format!("{}: {}", r.limit, r.message));
                return Err(self.shared.limit_refused(actor, peer, &r, status).await);
            }
            let wait = self
                .shared
                .limits
                .pace_records(agency.as_str(), batch.records.len());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let plan = match validate::plan(&self.shared.catalog, &agency, &batch) {
                Ok(p) => p,
                Err(e) => {
                    while pending.next().await.is_some() {}
                    return Err(self
                        .refuse(&agency, Action::Ingest, &batch.dataset, e)
                        .await);
                }
            };
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
            let mut rejected = 0u64;
            for (i, rec) in batch.records.into_iter().enumerate() {
                let line = rec.source_line;
                match plan.check(&agency, rec, now_ms) {
                    Ok(r) => good.push(r),
                    Err(p) => {
                        crate::metrics::global().rejected(
                            agency.as_str(),
                            &dataset,
                            &p.field,
                            p.code,
                        );
                        rejected += 1;
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
            let mut entry = self.entry(&agency, Action::Ingest, Decision::Allow, &dataset);
            entry.counts = Some(Counts {
                rejected: Some(rejected),
                ..Counts::default()
            });
            let rx = self
                .shared
                .store
                .submit(good, Some(entry))
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
        let m = crate::metrics::global();
        for d in &summary.per_dataset {
            m.ingested(agency.as_str(), &d.dataset, "accepted", d.accepted);
            m.ingested(agency.as_str(), &d.dataset, "duplicate", d.duplicates);
            m.ingested(agency.as_str(), &d.dataset, "replaced", d.replaced);
        }
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
        let agency = self.shared.require_agent(&req).await?;
        let actor = crate::audit::entry::Actor::agent(agency.as_str(), &self.shared.trust_domain);
        let admitted = self.shared.limits.agency_call(agency.as_str(), false);
        let _permit = self.shared.admit(&req, actor, admitted).await?;
        let req = req.into_inner();
        let b = pb::IngestBatch {
            dataset: req.dataset.clone(),
            schema_version: 0,
            ..Default::default()
        };
        // Reuse the ownership checks of ingest (version is not relevant to a withdrawal).
        match validate::plan(&self.shared.catalog, &agency, &b) {
            Ok(_) | Err(validate::BatchError::SchemaVersion { .. }) => {}
            Err(e) => {
                return Err(self
                    .refuse(&agency, Action::Withdraw, &req.dataset, e)
                    .await);
            }
        }
        let bad = if !matches!(req.reason.as_str(), "erasure" | "rectification") {
            Some("reason must be \"erasure\" or \"rectification\"")
        } else if req.record_keys.iter().any(|k| k.len() != 32) {
            Some("every record key must be a 32-byte token")
        } else {
            None
        };
        if let Some(why) = bad {
            let mut e = self.entry(&agency, Action::Withdraw, Decision::Deny, &req.dataset);
            e.reason = Some(why.to_owned());
            self.shared.record(e).await?;
            return Err(Status::invalid_argument(why));
        }
        let keys: Vec<[u8; 32]> = req
            .record_keys
            .iter()
            .filter_map(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
            .collect();
        let mut entry = self.entry(&agency, Action::Withdraw, Decision::Allow, &req.dataset);
        entry.reason = Some(req.reason.clone());
        let c = self
            .shared
            .store
            .withdraw(&req.dataset, keys, Some(entry))
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
