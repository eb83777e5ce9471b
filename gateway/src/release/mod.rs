//! Linked releases: record extracts and aggregate tables under an agreement and purpose, with
//! disclosure control, person ids re-keyed per release scope, and a manifest bound to the
//! audit log.
//!
//! A release is decided by the policy (every dataset of it, default deny), written to a spool
//! folder under `data/releases` with each file's SHA-256 computed on the way, its people noted
//! in the registry, and then its audit entry — carrying the SHA-256 of the manifest body, which
//! lists every file's SHA-256 — is made durable. Only then is the manifest (with the entry, its
//! inclusion proof and a signed checkpoint) written and the folder handed to the caller to send.
//! If the entry cannot be written, the spool is deleted and nothing is sent. The spool is
//! deleted once sent ([`Prepared`] removes it when dropped).
//!
//! An aggregate table is also compared with the tables of its dataset released before it,
//! under any agreement and purpose and by any analyst ([`differencing`]): one whose counted
//! record versions differ from an earlier table's by fewer than the smaller `min_cell` of the
//! two purposes (but not none) is refused (rule `disclosure.differencing`, audited); one
//! counting exactly the records of earlier tables by other fields is released with a note
//! counting them (audit entry reason and manifest `shares_population_with_earlier_tables`).
//! What the analyst sees (the refusal, the manifest and its audit entry) never names another
//! release: the deny entry's reason names the earlier release and its audit entry for auditors.
//! Comparison and registration hold one lock, so two tables asked at once are compared with
//! each other too; a table never delivered is removed from the comparisons under the same lock
//! ([`Releaser::forget_undelivered_table`]).

pub mod build;
pub mod differencing;
pub mod linkset;
pub mod manifest;
pub mod parquet_out;
pub mod registry;

use crate::audit::entry::{Action, Actor, AgreementRef, Decision, Entry};
use crate::audit::log::{AuditError, AuditLog};
use crate::disclosure::Settings;
use crate::linkage::{ClusterId, IdScope, PersonNode, ReleaseKey, TokenKind};
use crate::policy::Policy;
use crate::policy::apply::ReleasePlan;
use crate::policy::decide::{self, Denial, Explanation, Request as PolicyRequest, Requester};
use crate::policy::isa::{Output, Purpose};
use crate::store::{Store, StoreError};
use build::{AggregatePart, BuildError, ExtractPart, FileStats, PeopleSeen};
use differencing::{Units, Verdict};
use linkset::{LinkKey, LinkSet, LinkSetError};
use registry::{Registry, ReleaseHeader, TableUnits};
use skp_core::Catalog;
use skp_core::token::Token;
use std::path::PathBuf;
use std::sync::Arc;
use time::OffsetDateTime;

/// An extract request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractRequest {
    /// Agreement id.
    pub agreement: String,
    /// Purpose id.
    pub purpose: String,
    /// Datasets wanted; empty = every dataset of the purpose.
    pub datasets: Vec<String>,
}

/// An aggregate request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateRequest {
    /// Agreement id.
    pub agreement: String,
    /// Purpose id.
    pub purpose: String,
    /// Dataset counted.
    pub dataset: String,
    /// Released fields to count by.
    pub by: Vec<String>,
}

/// Why a release was not made.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The policy refused it (the refusal is audited).
    #[error("{rule}: {message}")]
    Denied {
        /// Stable rule name.
        rule: &'static str,
        /// Why, and the fix where there is one.
        message: String,
        /// Index of the audit entry recording the refusal.
        audit_entry: Option<u64>,
    },
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The audit entry could not be made durable: nothing was released.
    #[error("the release's audit entry could not be written, so nothing was released: {0}")]
    Audit(#[from] AuditError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the release failed.
    #[error("the release could not be prepared: {0}")]
    Build(String),
}

impl From<BuildError> for ReleaseError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Store(s) => ReleaseError::Store(s),
            other => ReleaseError::Build(other.to_string()),
        }
    }
}

impl From<LinkSetError> for ReleaseError {
    fn from(e: LinkSetError) -> Self {
        match e {
            LinkSetError::Store(s) => ReleaseError::Store(s),
            other => ReleaseError::Build(other.to_string()),
        }
    }
}

impl From<std::io::Error> for ReleaseError {
    fn from(e: std::io::Error) -> Self {
        ReleaseError::Build(e.to_string())
    }
}

/// A release ready to send: its folder, already audited.
#[derive(Debug)]
pub struct Prepared {
    /// Release id.
    pub release_id: String,
    /// The spool folder holding the files.
    pub dir: PathBuf,
    /// File names in sending order (`manifest.json` last).
    pub files: Vec<String>,
    /// Index of the release's audit entry.
    pub audit_entry: u64,
    /// Bytes of all files.
    pub total_bytes: u64,
    /// The manifest.
    pub manifest: manifest::Manifest,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(release = %self.release_id, error = %e, "cannot remove a release spool");
        }
    }
}

/// What releases need from the gateway.
#[derive(Clone)]
pub struct Releaser {
    store: Store,
    audit: AuditLog,
    catalog: Arc<Catalog>,
    links: LinkSet,
    key: Arc<ReleaseKey>,
    registry: Registry,
    /// Most rows one release may carry (`limits.max_release_rows`).
    max_rows: u64,
    /// Held from comparing a table with the earlier ones until it is registered (or refused).
    tables: Arc<std::sync::Mutex<()>>,
}

impl std::fmt::Debug for Releaser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Releaser").finish_non_exhaustive()
    }
}

/// Agreement id, version and file SHA-256, as decisions report them.
type AgreementId = (String, String, String);

/// What a release asks for.
struct Asked<'a> {
    agreement: &'a str,
    purpose: &'a str,
    /// Datasets, each with the fields asked (empty: all).
    datasets: &'a [(String, Vec<String>)],
    output: Output,
}

/// The decisions of a release, one per dataset.
struct Decided<'p> {
    purpose: &'p Purpose,
    agreement: AgreementRef,
    parts: Vec<(String, Explanation, ReleasePlan)>,
}

impl Releaser {
    /// A releaser over the gateway's store and audit log; `data_dir` holds `releases/`.
    pub fn new(
        store: Store,
        audit: AuditLog,
        catalog: Arc<Catalog>,
        key: ReleaseKey,
        data_dir: &std::path::Path,
    ) -> std::io::Result<Self> {
        Ok(Self {
            links: LinkSet::new(store.clone(), catalog.clone()),
            registry: Registry::open_audited(data_dir, Some(&audit))?,
            store,
            audit,
            catalog,
            key: Arc::new(key),
            max_rows: u64::MAX,
            tables: Arc::new(std::sync::Mutex::new(())),
        })
    }

    /// The same releaser refusing releases of more than `rows` rows (audited, rule
    /// `limits.max_release_rows`).
    pub fn with_max_rows(mut self, rows: u64) -> Self {
        self.max_rows = rows;
        self
    }

    /// The registry of releases.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The linkers.
    pub fn links(&self) -> &LinkSet {
        &self.links
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Decides every dataset of a request; a refusal is audited and returned.
    fn decide<'p>(
        &self,
        policy: &'p Policy,
        who: &Requester,
        actor: &Actor,
        asked: Asked<'_>,
        now: OffsetDateTime,
    ) -> Result<Decided<'p>, ReleaseError> {
        let Asked {
            agreement,
            purpose,
            datasets,
            output,
        } = asked;
        let mut parts = Vec::new();
        let mut refusal: Option<(Denial, Option<AgreementId>)> = None;
        for (ds, fields) in datasets {
            let e = decide::explain(
                policy,
                &self.catalog,
                who,
                &PolicyRequest {
                    agreement: agreement.to_owned(),
                    purpose: purpose.to_owned(),
                    dataset: ds.clone(),
                    fields: fields.clone(),
                },
                now,
            );
            if let Some(d) = &e.denial {
                refusal = Some((d.clone(), e.agreement.clone()));
                break;
            }
            if let Some((name, outcome)) = e.fields.iter().find(|(n, o)| {
                !o.released()
                    && fields
                        .iter()
                        .any(|f| f.split(':').next() == Some(n.as_str()))
            }) && let decide::FieldOutcome::Denied(d) = outcome
            {
                refusal = Some((
                    Denial {
                        rule: d.rule,
                        message: format!("{name} was asked for but is not released: {}", d.message),
                    },
                    e.agreement.clone(),
                ));
                break;
            }
            parts.push((ds.clone(), e));
        }
        let found = policy
            .agreement(agreement)
            .and_then(|a| a.purposes.iter().find(|p| p.id == purpose).map(|p| (a, p)));
        if refusal.is_none()
            && let Some((a, p)) = found
            && output == Output::Records
            && p.output != Output::Records
        {
            refusal = Some((
                Denial {
                    rule: "aggregate-only",
                    message: format!(
                        "purpose {purpose} releases aggregate counts only; request a table with `gateway aggregate`"
                    ),
                },
                Some((a.id.clone(), a.version.clone(), a.sha256.clone())),
            ));
        }
        if refusal.is_none() && datasets.is_empty() {
            refusal = Some((
                Denial {
                    rule: "no-dataset",
                    message: "the request names no dataset".into(),
                },
                None,
            ));
        }
        let agreement_ref = |known: Option<AgreementId>| match known {
            Some((id, version, sha)) => AgreementRef {
                id,
                version,
                policy_sha256: sha,
                purpose: purpose.chars().take(128).collect(),
            },
            None => AgreementRef {
                id: agreement.chars().take(128).collect(),
                version: found.map(|(a, _)| a.version.clone()).unwrap_or_default(),
                policy_sha256: policy.sha256().to_owned(),
                purpose: purpose.chars().take(128).collect(),
            },
        };
        if let Some((d, known)) = refusal {
            return Err(self.refuse(
                actor,
                Refusal {
                    rule: d.rule,
                    message: d.message,
                    detail: None,
                    datasets: datasets
                        .iter()
                        .map(|(d, _)| d.chars().take(128).collect())
                        .collect(),
                    agreement: agreement_ref(known),
                    counted: Counted::Denied,
                },
            ));
        }
        let Some((_, p)) = found else {
            return Err(ReleaseError::BadRequest(
                "internal: purpose vanished".into(),
            ));
        };
        let mut compiled = Vec::new();
        let mut known = None;
        for (ds, e) in parts {
            let d = self
                .catalog
                .dataset(&ds)
                .ok_or_else(|| ReleaseError::BadRequest(format!("unknown dataset {ds}")))?;
            let plan = ReleasePlan::new(d, &e).map_err(ReleaseError::Build)?;
            known = known.or(e.agreement.clone());
            compiled.push((ds, e, plan));
        }
        Ok(Decided {
            purpose: p,
            agreement: agreement_ref(known),
            parts: compiled,
        })
    }

    /// The linker key of a purpose: its linkage kinds over its datasets.
    fn link_key(purpose: &Purpose) -> Result<LinkKey, ReleaseError> {
        LinkKey::of_purpose(purpose).map_err(|e| ReleaseError::Build(e.to_string()))
    }

    /// Makes a record extract of every field the agreement allows (blocking: run it off the
    /// async runtime).
    pub fn extract(
        &self,
        policy: &Policy,
        who: &Requester,
        actor: &Actor,
        req: &ExtractRequest,
        now: OffsetDateTime,
    ) -> Result<Prepared, ReleaseError> {
        self.extract_fields(policy, who, actor, req, &[], now)
    }

    /// Makes a record extract; `fields` (`dataset.field` or `dataset.field:transform`) restrict
    /// the datasets they name to those fields, optionally coarser (blocking).
    pub fn extract_fields(
        &self,
        policy: &Policy,
        who: &Requester,
        actor: &Actor,
        req: &ExtractRequest,
        fields: &[String],
        now: OffsetDateTime,
    ) -> Result<Prepared, ReleaseError> {
        let names: Vec<String> = if req.datasets.is_empty() {
            policy
                .agreement(&req.agreement)
                .and_then(|a| a.purposes.iter().find(|p| p.id == req.purpose))
                .map(|p| p.datasets.keys().cloned().collect())
                .unwrap_or_else(|| vec![String::new()])
        } else {
            req.datasets.clone()
        };
        let mut datasets: Vec<(String, Vec<String>)> =
            names.into_iter().map(|d| (d, Vec::new())).collect();
        for f in fields {
            let Some((ds, field)) = f.split_once('.') else {
                return Err(ReleaseError::BadRequest(format!(
                    "field {:?} does not name its dataset; write dataset.field or dataset.field:transform",
                    f.chars().take(128).collect::<String>()
                )));
            };
            match datasets.iter_mut().find(|(d, _)| d == ds) {
                Some((_, v)) => v.push(field.to_owned()),
                None => {
                    return Err(ReleaseError::BadRequest(format!(
                        "field {:?} names dataset {:?}, which this extract does not include",
                        f.chars().take(128).collect::<String>(),
                        ds.chars().take(64).collect::<String>()
                    )));
                }
            }
        }
        let decided = self.decide(
            policy,
            who,
            actor,
            Asked {
                agreement: &req.agreement,
                purpose: &req.purpose,
                datasets: &datasets,
                output: Output::Records,
            },
            now,
        )?;
        let purpose = decided.purpose;
        let settings = Settings::from(&purpose.disclosure);
        let Started {
            release_id,
            spool,
            guard,
            link_key,
            mut snapshots,
            locked,
        } = self.start(&decided)?;
        let mut links = locked.lock();
        let keys = self
            .key
            .release(&req.agreement, &req.purpose, &IdScope::Purpose);
        let mut people = PeopleSeen::new();
        let mut files = Vec::new();
        for (ds, e, plan) in &decided.parts {
            let qi: Vec<usize> = plan
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| purpose.disclosure.quasi_identifiers.contains(&c.name))
                .map(|(i, _)| i)
                .collect();
            let part = ExtractPart {
                dataset: ds,
                plan,
                persons: &e.persons,
                qi,
                snapshot: snapshots.next().ok_or_else(|| {
                    ReleaseError::Build("internal: a dataset has no snapshot".into())
                })?,
            };
            files.push(build::write_extract(
                &self.store,
                &spool,
                &part,
                settings.k,
                &mut links,
                &keys,
                &mut people,
            )?);
        }
        drop(links);
        self.seal(
            decided, who, actor, release_id, "extract", files, people, link_key, now, guard, None,
        )
    }

    /// Makes a counts table (blocking: run it off the async runtime).
    pub fn aggregate(
        &self,
        policy: &Policy,
        who: &Requester,
        actor: &Actor,
        req: &AggregateRequest,
        now: OffsetDateTime,
    ) -> Result<Prepared, ReleaseError> {
        if req.by.is_empty() {
            return Err(ReleaseError::BadRequest(
                "name at least one field to count by (--by field[,field])".into(),
            ));
        }
        if req.by.len() > 4 {
            return Err(ReleaseError::BadRequest(
                "count by at most 4 fields; more makes every cell small and suppressed".into(),
            ));
        }
        let asked = [(req.dataset.clone(), req.by.clone())];
        let decided = self.decide(
            policy,
            who,
            actor,
            Asked {
                agreement: &req.agreement,
                purpose: &req.purpose,
                datasets: &asked,
                output: Output::Aggregate,
            },
            now,
        )?;
        let purpose = decided.purpose;
        let settings = Settings::from(&purpose.disclosure);
        let Started {
            release_id,
            spool,
            guard,
            link_key,
            mut snapshots,
            locked,
        } = self.start(&decided)?;
        let mut links = locked.lock();
        let mut people = PeopleSeen::new();
        let mut files = Vec::new();
        let mut units = Vec::new();
        for (ds, _, plan) in &decided.parts {
            // Columns in the order asked.
            let mut plan = plan.clone();
            let order = |name: &str| {
                req.by
                    .iter()
                    .position(|b| b.split(':').next() == Some(name))
                    .unwrap_or(usize::MAX)
            };
            plan.columns.sort_by_key(|c| order(&c.name));
            let part = AggregatePart {
                dataset: ds,
                plan: &plan,
                snapshot: snapshots.next().ok_or_else(|| {
                    ReleaseError::Build("internal: a dataset has no snapshot".into())
                })?,
            };
            match build::write_aggregate(
                &self.store,
                &spool,
                &part,
                &settings,
                &mut links,
                &mut people,
                &mut units,
            ) {
                Ok(f) => files.push(f),
                Err(BuildError::Disclosure(e)) => {
                    // Fails closed: the table is refused as a decision, audited, not retried.
                    return Err(self.refuse(
                        actor,
                        Refusal {
                            rule: "unprotectable-table",
                            message: format!(
                                "disclosure control cannot protect this table ({e}); count by fewer or coarser fields"
                            ),
                            detail: None,
                            datasets: vec![ds.clone()],
                            agreement: decided.agreement.clone(),
                            counted: Counted::Denied,
                        },
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        drop(links);
        // Compared and registered under one lock: a table asked at the same time is compared
        // with this one.
        let _tables = crate::unpoisoned(self.tables.lock());
        let table = self.compare_table(&decided, actor, &release_id, Units::new(units), now)?;
        self.seal(
            decided,
            who,
            actor,
            release_id,
            "aggregate",
            files,
            people,
            link_key,
            now,
            guard,
            Some(table),
        )
    }

    /// Compares a new table with the kept tables of its dataset released earlier (under any
    /// agreement and purpose, by anyone): refused, audited, if its records differ from one of
    /// theirs by `1..k`, `k` the smaller `min_cell` of the two purposes (rule
    /// [`differencing::RULE`]); else the unit list to register, with the earlier tables of the
    /// same records by other fields.
    fn compare_table(
        &self,
        decided: &Decided<'_>,
        actor: &Actor,
        release_id: &str,
        units: Units,
        now: OffsetDateTime,
    ) -> Result<NewTable, ReleaseError> {
        let Some((dataset, _, plan)) = decided.parts.first() else {
            return Err(ReleaseError::Build(
                "internal: a table has no dataset".into(),
            ));
        };
        let mut by: Vec<String> = plan
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, c.transform().name()))
            .collect();
        by.sort();
        let min_cell = decided.purpose.disclosure.min_cell;
        let unreadable = |e: std::io::Error| {
            ReleaseError::Build(format!(
                "cannot compare the table with the tables of {dataset} released before it: {e}"
            ))
        };
        let earlier = self.registry.tables(dataset).map_err(unreadable)?;
        let verdict = differencing::check(&units, &by, &earlier, min_cell, |e| {
            self.registry.population(dataset, &e.population, e.units)
        })
        .map_err(unreadable)?;
        let linked = match verdict {
            Verdict::Release { linked } => {
                if !linked.is_empty() {
                    // The gateway's log (and the registry) name them; the analyst sees a count.
                    let ids: Vec<&str> = linked.iter().map(|(id, _)| id.as_str()).collect();
                    tracing::info!(release = %release_id, linked = ?ids, "table counts the records of earlier tables by other fields");
                }
                linked
            }
            Verdict::Refuse { earlier, k } => {
                tracing::info!(release = %release_id, earlier = %earlier.release_id, audit_entry = earlier.audit_entry, "table refused: differencing");
                // To the analyst: no id of the earlier release (it may be another analyst's).
                let message = format!(
                    "the records this table counts differ from those of an earlier table of \
                     {dataset} (released {}) by fewer than {k} (the smaller minimum cell size of \
                     the two tables' purposes), so comparing the two would show a count below \
                     it; the table can be asked for again once at least {k} records differ (new, \
                     corrected, withdrawn or no longer admitted by the purpose's filter)",
                    earlier.released
                );
                return Err(self.refuse(
                    actor,
                    Refusal {
                        rule: differencing::RULE,
                        message,
                        detail: Some(format!(
                            "the earlier table is release {} (audit entry {}, agreement {}, \
                             purpose {})",
                            earlier.release_id,
                            earlier.audit_entry,
                            earlier.agreement,
                            earlier.purpose
                        )),
                        datasets: vec![dataset.clone()],
                        agreement: decided.agreement.clone(),
                        counted: Counted::Denied,
                    },
                ));
            }
        };
        Ok(NewTable {
            header: TableUnits {
                release_id: release_id.to_owned(),
                agreement: decided.agreement.id.clone(),
                purpose: decided.agreement.purpose.clone(),
                dataset: dataset.clone(),
                released: crate::audit::entry::rfc3339_millis(now),
                min_cell,
                by,
                units: units.len(),
                population: units.digest(),
            },
            units,
            linked,
        })
    }

    /// Takes a table that was made but never delivered (its call ended before it was sent) out
    /// of the comparisons: nobody saw it, so it must not refuse a later table. The release
    /// stays registered (its audit entry says it was made). Holds the lock tables are compared
    /// and registered under. Blocking.
    pub fn forget_undelivered_table(&self, release_id: &str) -> std::io::Result<()> {
        let _tables = crate::unpoisoned(self.tables.lock());
        self.registry.remove_table(release_id)
    }

    /// Refuses a request: writes its `deny` entry (reason `<rule>: <message>`, then
    /// `; <detail>` for auditors only), counts it in the metrics and returns the refusal, with
    /// the entry's index, for the caller (who sees the message, never the detail).
    fn refuse(&self, actor: &Actor, r: Refusal) -> ReleaseError {
        let mut entry = Entry::new(actor.clone(), Action::Deny, Decision::Deny);
        entry.reason = Some(match &r.detail {
            Some(d) => format!("{}: {}; {d}", r.rule, r.message),
            None => format!("{}: {}", r.rule, r.message),
        });
        entry.datasets = r.datasets;
        entry.agreement = Some(r.agreement);
        let seq = match self.audit.append_blocking(vec![entry]) {
            Ok(seq) => seq,
            Err(e) => return e.into(),
        };
        match r.counted {
            Counted::Denied => crate::metrics::global().denied(r.rule),
            Counted::Limited => crate::metrics::global().limited(r.rule),
        }
        ReleaseError::Denied {
            rule: r.rule,
            message: r.message,
            audit_entry: seq.first().copied(),
        }
    }

    /// Opens a release: its id and spool folder, the records it reads (fixed first) and the
    /// purpose's linker brought up to (at least) the same moment, so every released person role
    /// has a cluster.
    fn start(&self, decided: &Decided<'_>) -> Result<Started, ReleaseError> {
        let release_id = new_release_id();
        let spool = self.registry.spool_dir(&release_id);
        std::fs::create_dir_all(&spool)?;
        let guard = Spool(Some(spool.clone()));
        let link_key = Self::link_key(decided.purpose)?;
        let snapshots = decided
            .parts
            .iter()
            .map(|(ds, _, _)| self.store.snapshot(&[ds.as_str()], 0))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let locked = self.links.synced(&link_key)?;
        Ok(Started {
            release_id,
            spool,
            guard,
            link_key,
            snapshots,
            locked,
        })
    }

    /// Registers the people, writes the audit entry, then the manifest.
    #[allow(clippy::too_many_arguments)]
    fn seal(
        &self,
        decided: Decided<'_>,
        who: &Requester,
        actor: &Actor,
        release_id: String,
        kind: &str,
        files: Vec<FileStats>,
        people: PeopleSeen,
        link_key: LinkKey,
        now: OffsetDateTime,
        guard: Spool,
        table: Option<NewTable>,
    ) -> Result<Prepared, ReleaseError> {
        let fields: Vec<String> = decided
            .parts
            .iter()
            .flat_map(|(ds, _, plan)| {
                plan.columns
                    .iter()
                    .map(move |c| format!("{ds}.{}:{}", c.name, c.transform().name()))
            })
            .collect();

        let purpose = decided.purpose;
        let spool_dir = guard.0.clone().unwrap_or_default();
        let created = crate::audit::entry::rfc3339_millis(now);
        let (clusters, multi, cross, linked_rows) = people.summary();
        let body = manifest::ManifestBody {
            format: manifest::MANIFEST_FORMAT.to_owned(),
            release_id: release_id.clone(),
            kind: kind.to_owned(),
            agreement: decided.agreement.clone(),
            requester: manifest::Requester {
                sub: who.sub.clone(),
                agency: who.agency.clone(),
            },
            created: created.clone(),
            linkage: Some(manifest::Linkage {
                method: if link_key.fuzzy.is_some() {
                    "fuzzy"
                } else {
                    "exact"
                }
                .into(),
                threshold: link_key.fuzzy.map(|f| f.threshold()),
                measured_quality: crate::linkage::quality::measured(
                    link_key.kinds,
                    link_key.fuzzy.map(|f| f.threshold()),
                )
                .map(|q| manifest::MeasuredQuality {
                    precision: q.precision,
                    recall: q.recall,
                    f1: q.f1,
                    with_date_of_birth: Some(q.with_date_of_birth),
                    without_date_of_birth: Some(q.without_date_of_birth),
                    measured_on: crate::linkage::quality::MEASURED_ON.into(),
                }),
                kinds: link_key
                    .kinds
                    .iter()
                    .map(|k| k.as_str().to_owned())
                    .collect(),
                id_scope: "purpose".into(),
                person_nodes: people.person_nodes,
                clusters,
                multi_node_clusters: multi,
                cross_agency_clusters: cross,
                records_linked_across_agencies: linked_rows,
            }),
            disclosure: manifest::DisclosureSettings {
                min_cell: purpose.disclosure.min_cell,
                health_rule: purpose.disclosure.health_rule,
                k: purpose.disclosure.k,
                quasi_identifiers: purpose.disclosure.quasi_identifiers.clone(),
            },
            files: files
                .iter()
                .map(|f| manifest::FileDigest {
                    name: f.name.clone(),
                    dataset: f.dataset.clone(),
                    columns: f.columns.clone(),
                    rows: f.rows,
                    suppressed_rows: f.suppressed_rows,
                    withheld_cells: f.withheld_cells,
                    suppressed_cells: f.suppressed_cells,
                    bytes: f.bytes,
                    sha256: f.sha256.clone(),
                })
                .collect(),
            shares_population_with_earlier_tables: table
                .as_ref()
                .map_or(0, |t| t.linked.len() as u64),
        };
        let header = ReleaseHeader {
            release_id: release_id.clone(),
            kind: kind.to_owned(),
            agreement: decided.agreement.id.clone(),
            purpose: decided.agreement.purpose.clone(),
            requester: who.sub.clone(),
            time: created,
            datasets: files.iter().map(|f| f.dataset.clone()).collect(),
            link_kinds: link_key
                .kinds
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            link_scope: link_key.scope.clone(),
            link_fuzzy: link_key.fuzzy.map(|f| f.threshold()),
        };
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        if rows > self.max_rows {
            return Err(self.refuse(
                actor,
                Refusal {
                    rule: "limits.max_release_rows",
                    message: format!(
                        "the release would carry {rows} rows, more than the gateway's limit of {}; \
                         ask for fewer datasets or a narrower purpose",
                        self.max_rows
                    ),
                    detail: None,
                    datasets: header.datasets.clone(),
                    agreement: decided.agreement.clone(),
                    counted: Counted::Limited,
                },
            ));
        }
        let registered = table
            .as_ref()
            .map_or(Ok(()), |t| {
                self.registry.write_table_units(&t.header, &t.units)
            })
            .and_then(|()| self.registry.write_persons(&header, &people.seqs()));
        if let Err(e) = registered {
            self.registry.abandon(&release_id);
            return Err(e.into());
        }
        let mut entry = Entry::new(actor.clone(), Action::Release, Decision::Allow);
        entry.reason = table.as_ref().and_then(NewTable::linked_note);
        entry.datasets = header.datasets.clone();
        entry.fields = fields;
        entry.agreement = Some(decided.agreement.clone());
        entry.rows = Some(rows);
        entry.released_sha256 = Some(body.sha256_hex());
        entry.release = Some(release_id.clone());
        let index = match self.audit.append_blocking(vec![entry]) {
            Ok(v) => v.first().copied().ok_or_else(|| {
                ReleaseError::Audit(AuditError::Io("internal: no index returned".into()))
            })?,
            Err(e) => {
                self.registry.abandon(&release_id);
                tracing::error!(release = %release_id, error = %e, "release refused: its audit entry could not be written");
                return Err(e.into());
            }
        };
        self.registry.commit(&release_id, index)?;
        if let Some(t) = &table
            && let Err(e) = self.registry.prune_tables(&t.header.dataset)
        {
            // Keeping more than the window only compares tables with more.
            tracing::warn!(release = %release_id, error = %e, "cannot drop the oldest table unit lists");
        }
        crate::metrics::global().released(kind, rows);
        let binding = self.binding(index)?;
        let manifest = manifest::Manifest {
            release: body,
            audit: binding,
        };
        let bytes = manifest.to_bytes();
        std::fs::write(spool_dir.join(manifest::MANIFEST_FILE), &bytes)?;
        let mut names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        names.push(manifest::MANIFEST_FILE.to_owned());
        let total_bytes = files.iter().map(|f| f.bytes).sum::<u64>() + bytes.len() as u64;
        tracing::info!(release = %release_id, kind, rows, audit_entry = index, "release prepared");
        Ok(Prepared {
            release_id,
            dir: guard.keep(),
            files: names,
            audit_entry: index,
            total_bytes,
            manifest,
        })
    }

    /// The registered releases that included the person carrying any of `tokens` (kind, token),
    /// and how many stored records carry them.
    ///
    /// A release included the person when one of the linked person roles of its released rows
    /// is, by the linkage of that release's purpose as it stands now, the person: in the same
    /// cluster as a role carrying one of the tokens (so later records that linked the person
    /// count too). A released record since replaced or withdrawn is read from the segment that
    /// keeps its bytes and counts through its own tokens. Tokens of records outside a release's
    /// linked roles and rows find nothing there: pass every token the agency can compute for
    /// the person.
    pub fn person_releases(
        &self,
        tokens: &[(String, [u8; 32])],
    ) -> Result<(u64, Vec<registry::Registered>), ReleaseError> {
        // The person's roles among live records: (seq, role index).
        let mut nodes = Vec::new();
        let mut records = std::collections::BTreeSet::new();
        for (kind, tok) in tokens {
            for seq in self.store.records_with_token(kind, tok)? {
                let Some(rec) = self.store.record_at(seq)? else {
                    continue;
                };
                let persons = rec
                    .record
                    .as_ref()
                    .map_or(&[][..], |r| r.persons.as_slice());
                for (i, p) in persons.iter().enumerate() {
                    if p.tokens.iter().any(|t| &t.kind == kind && t.token == tok) {
                        nodes.push(PersonNode::new(seq, i as u32));
                        records.insert(seq);
                    }
                }
            }
        }
        let given: Vec<(TokenKind, Token)> = tokens
            .iter()
            .filter_map(|(k, t)| Some((TokenKind::parse(k)?, Token(*t))))
            .collect();
        let mut out = Vec::new();
        for reg in self.registry.list()? {
            let key = reg.header.link_key();
            let locked = self.links.synced(&key)?;
            let mut st = locked.lock();
            let linker = &mut st.linker;
            let mut targets: std::collections::HashSet<ClusterId> =
                nodes.iter().filter_map(|n| linker.cluster(*n)).collect();
            targets.extend(
                given
                    .iter()
                    .filter_map(|(k, t)| linker.cluster_of_token(*k, t)),
            );
            let released = reg.seqs()?;
            if released.is_empty() {
                continue;
            }
            let mut included = !targets.is_empty()
                && linker
                    .members(&targets)
                    .iter()
                    .any(|n| released.binary_search(&n.seq).is_ok());
            if !included {
                // Released records since replaced or withdrawn: their own tokens.
                for seq in self.store.gone_among(&released)? {
                    let Some(rec) = self.store.record_any(seq)? else {
                        continue;
                    };
                    if gone_record_matches(&rec, &key, &given, &targets, linker) {
                        included = true;
                        break;
                    }
                }
            }
            if included {
                out.push(reg);
            }
        }
        Ok((records.len() as u64, out))
    }

    /// The audit entry's bytes, inclusion proof and a signed checkpoint covering it.
    fn binding(&self, index: u64) -> Result<manifest::AuditBinding, ReleaseError> {
        let cp = self.audit.checkpoint()?;
        let size = cp.checkpoint.size;
        let proof = self.audit.inclusion_proof(index, size)?;
        let mut reader = self.audit.read(index, index + 1)?;
        let entry = reader.next().transpose()?.ok_or_else(|| {
            ReleaseError::Build("the release's audit entry cannot be read".into())
        })?;
        Ok(manifest::AuditBinding {
            entry_index: index,
            entry: String::from_utf8(entry)
                .map_err(|_| ReleaseError::Build("audit entry is not UTF-8".into()))?,
            inclusion_proof: proof.iter().map(hex::encode).collect(),
            checkpoint: cp.note,
        })
    }
}

/// Whether a replaced or withdrawn released record showed the person: one of its linked roles
/// carries a given token, or a token of a kind the linker links on that now belongs to one of
/// the person's clusters.
fn gone_record_matches(
    rec: &crate::store::StoredRecord,
    key: &LinkKey,
    given: &[(TokenKind, Token)],
    targets: &std::collections::HashSet<ClusterId>,
    linker: &mut crate::linkage::Linker,
) -> bool {
    let Some(scope) = key.scope.iter().find(|s| s.dataset == rec.dataset) else {
        return false;
    };
    let persons = rec
        .record
        .as_ref()
        .map_or(&[][..], |r| r.persons.as_slice());
    persons
        .iter()
        .filter(|p| scope.roles.as_ref().is_none_or(|r| r.contains(&p.role)))
        .flat_map(|p| &p.tokens)
        .filter_map(|t| Some((TokenKind::parse(&t.kind)?, Token::from_slice(&t.token)?)))
        .any(|(k, t)| {
            given.contains(&(k, t))
                || linker
                    .cluster_of_token(k, &t)
                    .is_some_and(|c| targets.contains(&c))
        })
}

/// A release opened by [`Releaser::start`].
struct Started {
    release_id: String,
    spool: PathBuf,
    guard: Spool,
    link_key: LinkKey,
    snapshots: std::vec::IntoIter<crate::store::Snapshot>,
    locked: linkset::LockedLinker,
}

/// A refusal to audit ([`Releaser::refuse`]).
struct Refusal {
    /// Stable rule name.
    rule: &'static str,
    /// Why, and the fix: for the caller and the audit entry.
    message: String,
    /// For the audit entry only (auditors): what the caller must not see.
    detail: Option<String>,
    /// Datasets of the request.
    datasets: Vec<String>,
    /// The agreement and purpose asked.
    agreement: AgreementRef,
    /// Which metric counts it.
    counted: Counted,
}

/// The metric a refusal is counted in.
enum Counted {
    /// `denied`, by rule.
    Denied,
    /// `limited`, by limit.
    Limited,
}

/// A table compared with the earlier ones and released: what the registry keeps of it.
struct NewTable {
    header: TableUnits,
    units: Units,
    /// Earlier tables of the same records by other fields: (release id, audit entry), newest
    /// first.
    linked: Vec<(String, u64)>,
}

impl NewTable {
    /// The audit entry's note on the earlier tables of the same records by other fields. The
    /// entry goes to the analyst in the manifest, so it counts them and names none (they may be
    /// other analysts' releases; an auditor finds them in the registry by the population digest
    /// of this release's `.units` file).
    fn linked_note(&self) -> Option<String> {
        if self.linked.is_empty() {
            return None;
        }
        Some(format!(
            "{}: counts exactly the records of {} earlier table(s) of {} by other fields; their \
             shared totals can narrow each other's suppressed cells",
            differencing::LINKED,
            self.linked.len(),
            self.header.dataset
        ))
    }
}

/// Removes a spool folder unless kept.
struct Spool(Option<PathBuf>);

impl Spool {
    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn new_release_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests;
