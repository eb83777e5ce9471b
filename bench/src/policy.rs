//! `bench policy`: the cost of policy decisions in a release, per record and per field, beside
//! the cost of reading the same stored records with no policy (the limit).
//!
//! The records are synthetic `police_crime` rows pseudonymised as the agent does and validated
//! and encoded exactly as the gateway stores them. The decision is the Serious Violence SNA
//! agreement's (row filter on offence codes, every field kept, generalised or denied).

use crate::median;
use crate::workload::Workload;
use anyhow::{Context, Result};
use gateway::policy::Policy;
use gateway::policy::apply::ReleasePlan;
use gateway::policy::decide::{Request, Requester, explain};
use gateway::store::StoredRecord;
use prost::Message;
use skp_core::{AgencyId, Catalog, LinkageKey};
use std::time::Instant;

/// Runs the benchmark and prints a JSON report.
pub fn run(records: usize, runs: usize) -> Result<()> {
    let catalog = Catalog::embedded()?;
    let ds = catalog.dataset("police_crime").context("police_crime")?;
    let key = LinkageKey::from_hex(&"ab".repeat(32))?;
    let work = Workload::make(ds, &key, records, 1000)?;
    let agency = AgencyId::new("met-police")?;
    let mut stored: Vec<Vec<u8>> = Vec::with_capacity(records);
    for b in &work.batches {
        let plan = gateway::validate::plan(&catalog, &agency, b)
            .map_err(|e| anyhow::anyhow!("batch refused: {e}"))?;
        for r in b.records.clone() {
            let rec = plan
                .check(&agency, r, 0)
                .map_err(|p| anyhow::anyhow!("record refused: {} {}", p.field, p.reason))?;
            stored.push(rec.encoded);
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let policy = Policy::embedded(&catalog, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    let who = Requester {
        sub: "bench".into(),
        agency: Some("rbk-council".into()),
        roles: vec!["analyst".into()],
    };
    let req = Request {
        agreement: "SKP-ISA-SV-01".into(),
        purpose: "serious-violence-sna".into(),
        dataset: "police_crime".into(),
        fields: vec![],
    };
    let t = Instant::now();
    let decisions = 10_000;
    for _ in 0..decisions {
        std::hint::black_box(explain(&policy, &catalog, &who, &req, now));
    }
    let explain_us = t.elapsed().as_secs_f64() * 1e6 / decisions as f64;
    let e = explain(&policy, &catalog, &who, &req, now);
    let plan = ReleasePlan::new(ds, &e).map_err(|e| anyhow::anyhow!("{e}"))?;
    let columns = plan.columns.len();

    let (mut base, mut filtered, mut full) = (Vec::new(), Vec::new(), Vec::new());
    let mut admitted = 0usize;
    let mut withheld = Vec::new();
    for _ in 0..runs {
        // Baseline: decode every stored record and read every value (no policy).
        let t = Instant::now();
        let mut sink = 0usize;
        for b in &stored {
            let r = StoredRecord::decode(b.as_slice())?;
            if let Some(rec) = &r.record {
                sink += rec.values.iter().filter(|v| v.kind.is_some()).count();
            }
        }
        std::hint::black_box(sink);
        base.push(t.elapsed().as_secs_f64());

        // The release: decode, row filter, transforms of the admitted records.
        let t = Instant::now();
        admitted = 0;
        withheld.clear();
        for b in &stored {
            let r = StoredRecord::decode(b.as_slice())?;
            if let Some(rec) = &r.record
                && plan.admits(&rec.values)
            {
                admitted += 1;
                let mut out = Vec::with_capacity(columns);
                plan.apply(&rec.values, &mut out, &mut withheld);
                std::hint::black_box(&out);
            }
        }
        filtered.push(t.elapsed().as_secs_f64());

        // Worst case: every record admitted (transforms of every released field of every record).
        let t = Instant::now();
        for b in &stored {
            let r = StoredRecord::decode(b.as_slice())?;
            if let Some(rec) = &r.record {
                std::hint::black_box(plan.admits(&rec.values));
                let mut out = Vec::with_capacity(columns);
                plan.apply(&rec.values, &mut out, &mut withheld);
                std::hint::black_box(&out);
            }
        }
        full.push(t.elapsed().as_secs_f64());
    }
    let n = records as f64;
    let (b, f, w) = (median(base), median(filtered), median(full));
    let per_rec = |s: f64| s * 1e9 / n;
    let policy_ns_per_record = per_rec(w - b);
    let report = serde_json::json!({
        "bench": "policy",
        "records": records,
        "runs": runs,
        "released_columns": columns,
        "admitted_by_filter": admitted,
        "cells_withheld_untransformable": withheld.len(),
        "explain_decision_us": (explain_us * 100.0).round() / 100.0,
        "read_no_policy_ns_per_record": per_rec(b).round(),
        "release_sv_filter_ns_per_record": per_rec(f).round(),
        "release_every_record_ns_per_record": per_rec(w).round(),
        "policy_ns_per_record": policy_ns_per_record.round(),
        "policy_ns_per_field": (policy_ns_per_record / columns as f64 * 10.0).round() / 10.0,
        "policy_overhead_every_record": ((w / b - 1.0) * 1000.0).round() / 1000.0,
        "policy_overhead_sv_filter": ((f / b - 1.0) * 1000.0).round() / 1000.0,
    });
    eprintln!(
        "read with no policy: {:.0} ns/record; release (every record, {columns} columns): {:.0} ns/record = +{:.0}% ({:.1} ns per field); with the SV filter ({admitted} of {records} admitted): +{:.0}%; explain: {explain_us:.1} µs per decision",
        per_rec(b),
        per_rec(w),
        (w / b - 1.0) * 100.0,
        policy_ns_per_record / columns as f64,
        (f / b - 1.0) * 100.0
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
