//! Releases end to end in one process: a real store, audit log and registry in a temporary
//! directory, policies loaded from ISA text, records built as the agent sends them and checked
//! by [`crate::validate`] as the gateway does before storing them.
//!
//! What is checked: an extract never releases a field, a row or a value the ISA does not allow
//! (property test against an oracle written from the ISA, not from the release code);
//! k-anonymity and table suppression against the in-memory oracles of [`crate::disclosure`]
//! (and a brute-force attacker for small tables); nothing is released, spooled or registered
//! when the audit entry cannot be written; person ids per purpose; the "who saw this person"
//! registry; the linkers kept in step with the store (incremental, rebuilt on withdrawal); and
//! tables refused when their records differ from an earlier table's by fewer than `min_cell`
//! (differencing), or flagged when they count the same records by other fields.

use super::{AggregateRequest, ExtractRequest, Prepared, ReleaseError, Releaser};
use crate::audit::entry::{Action, Actor, Entry};
use crate::audit::log::AuditLog;
use crate::disclosure::{self, Cell as DCell, Protected, Table};
use crate::linkage::ReleaseKey;
use crate::policy::Policy;
use crate::policy::decide::Requester;
use crate::policy::isa::Disposition;
use crate::store::{NewRecord, Outcome, Store};
use crate::validate;
use proptest::prelude::*;
use proptest::sample::Index;
use sha2::{Digest, Sha256};
use sharing_proto::v1::value::Kind;
use sharing_proto::v1::{IngestBatch, PersonRole, Record, StringSet, TypedToken, Value};
use skp_core::Catalog;
use skp_core::catalog::{Dataset, Field, FieldClass, FieldType};
use skp_core::checkpoint::SigningKey;
use skp_core::transform::{Cell, Transform, coarser_or_equal};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use time::OffsetDateTime;
use time::macros::datetime;

// ---------------------------------------------------------------------------------------------
// Fixtures: policy

/// The clock of every test: inside the test agreement's validity.
const NOW: OffsetDateTime = datetime!(2026-01-15 12:00 UTC);

/// The test agreement's id.
const AGREEMENT: &str = "T-ISA-REL";

/// Every party, and a health basis so health and social care datasets may be released as
/// records with person ids too.
const HEADER: &str = r#"# Test agreement written for gateway/src/release/tests.rs.
[agreement]
id = "T-ISA-REL"
title = "Test: releases"
version = "1.0"
parties = ["met-police", "rbk-council", "lfb", "probation", "swl-icb"]
dpia = "T-DPIA-1"
valid_from = 2025-04-01T00:00:00+01:00
valid_until = 2027-03-31T23:59:59+01:00
review_by = 2026-09-30T23:59:59+01:00
retention = "12 months"

[agreement.legal_basis]
gateways = ["CDA 1998 s.115"]
article6 = "6(1)(e) public task"
health = "Caldicott-approved DHR panel, CG sign-off 2025-04"
"#;

fn catalog() -> &'static Arc<Catalog> {
    static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();
    CATALOG.get_or_init(|| Arc::new(Catalog::embedded().expect("the embedded catalog is valid")))
}

fn dataset(name: &str) -> &'static Dataset {
    catalog()
        .dataset(name)
        .unwrap_or_else(|| panic!("dataset {name} is in the catalog"))
}

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn q_list<S: AsRef<str>>(items: &[S]) -> String {
    let v: Vec<String> = items.iter().map(|s| q(s.as_ref())).collect();
    format!("[{}]", v.join(", "))
}

/// One dataset of a purpose: its filter (TOML inline tables), person roles and a disposition
/// for every field.
#[derive(Debug, Clone)]
struct Part {
    dataset: String,
    filter: Vec<String>,
    persons: Vec<String>,
    fields: Vec<(String, String)>,
}

impl Part {
    /// Every field denied.
    fn deny_all(name: &str) -> Part {
        Part {
            dataset: name.to_owned(),
            filter: Vec::new(),
            persons: Vec::new(),
            fields: dataset(name)
                .fields
                .iter()
                .map(|f| (f.name.as_str().to_owned(), "deny".to_owned()))
                .collect(),
        }
    }

    /// `field` released as `disp` (`keep` or a transform name).
    fn with(mut self, field: &str, disp: &str) -> Part {
        let slot = self
            .fields
            .iter_mut()
            .find(|(f, _)| f == field)
            .unwrap_or_else(|| panic!("{} has a field {field}", self.dataset));
        slot.1 = disp.to_owned();
        self
    }

    fn filter(mut self, condition: &str) -> Part {
        self.filter.push(condition.to_owned());
        self
    }

    fn persons(mut self, roles: &[&str]) -> Part {
        self.persons = roles.iter().map(|r| (*r).to_owned()).collect();
        self
    }

    /// The disposition of every field, as the loader reads it.
    fn dispositions(&self) -> BTreeMap<String, Disposition> {
        self.fields
            .iter()
            .map(|(f, d)| (f.clone(), disposition(d)))
            .collect()
    }
}

fn disposition(name: &str) -> Disposition {
    match name {
        "keep" => Disposition::Keep,
        "deny" => Disposition::Deny,
        t => Disposition::Generalise(Transform::parse(t).expect("a transform name")),
    }
}

/// A purpose of the test agreement.
#[derive(Debug, Clone)]
struct Purpose {
    id: String,
    output: &'static str,
    linkage: Vec<String>,
    min_cell: u64,
    health_rule: bool,
    k: u64,
    quasi_identifiers: Vec<String>,
    parts: Vec<Part>,
}

impl Purpose {
    /// Records, no linkage, k = 1 (k-anonymity keeps every row).
    fn records(id: &str, parts: Vec<Part>) -> Purpose {
        Purpose {
            id: id.to_owned(),
            output: "records",
            linkage: Vec::new(),
            min_cell: 10,
            health_rule: false,
            k: 1,
            quasi_identifiers: Vec::new(),
            parts,
        }
    }

    fn aggregate(id: &str, parts: Vec<Part>) -> Purpose {
        Purpose {
            output: "aggregate",
            ..Purpose::records(id, parts)
        }
    }

    fn linkage(mut self, kinds: &[&str]) -> Purpose {
        self.linkage = kinds.iter().map(|k| (*k).to_owned()).collect();
        self
    }

    fn text(&self) -> String {
        let mut s = format!(
            "\n[[purpose]]\nid = {}\ndescription = \"test\"\n\
             recipients = [{{ agency = \"rbk-council\", role = \"analyst\" }}]\noutput = {}\n",
            q(&self.id),
            q(self.output)
        );
        if !self.linkage.is_empty() {
            s += &format!("linkage = {}\n", q_list(&self.linkage));
        }
        s += &format!(
            "\n[purpose.disclosure]\nmin_cell = {}\nhealth_rule = {}\nk = {}\nquasi_identifiers = {}\n",
            self.min_cell,
            self.health_rule,
            self.k,
            q_list(&self.quasi_identifiers)
        );
        for p in &self.parts {
            s += &format!("\n[purpose.datasets.{}]\n", p.dataset);
            if !p.filter.is_empty() {
                s += &format!("filter = [{}]\n", p.filter.join(", "));
            }
            if !p.persons.is_empty() {
                s += &format!("persons = {}\n", q_list(&p.persons));
            }
            s += &format!("\n[purpose.datasets.{}.fields]\n", p.dataset);
            for (f, d) in &p.fields {
                s += &format!("{f} = {}\n", q(d));
            }
        }
        s
    }
}

/// The test agreement with these purposes, loaded as the gateway loads it.
fn policy(purposes: &[Purpose]) -> Policy {
    let text: String = std::iter::once(HEADER.to_owned())
        .chain(purposes.iter().map(Purpose::text))
        .collect();
    let files = [(PathBuf::from("policies/agreements/t.toml"), text.clone())];
    Policy::from_texts(&files, catalog(), NOW, "test")
        .unwrap_or_else(|e| panic!("the test ISA should load:\n{e}\n---\n{text}"))
}

fn analyst() -> Requester {
    Requester {
        sub: "a.analyst".into(),
        agency: Some("rbk-council".into()),
        roles: vec!["analyst".into()],
    }
}

fn actor() -> Actor {
    Actor {
        kind: "analyst".into(),
        id: "a.analyst".into(),
        agency: Some("rbk-council".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures: records

/// A token as an agent would compute it: 32 bytes, here from a kind and a small number (equal
/// numbers of one kind are the same person's token).
fn token(kind: &str, id: u32) -> [u8; 32] {
    Sha256::digest(format!("test-token/{kind}/{id}")).into()
}

fn record_key(dataset: &str, key: u32) -> [u8; 32] {
    Sha256::digest(format!("test-key/{dataset}/{key}")).into()
}

/// A record as an agent sends it: values in the catalog order of sent fields.
#[derive(Debug, Clone)]
struct Rec {
    dataset: &'static Dataset,
    key: u32,
    /// Role and its tokens (kind, token number), in the order sent.
    persons: Vec<(String, Vec<(String, u32)>)>,
    values: Vec<Value>,
}

impl Rec {
    /// A record whose required fields hold a valid value and the others none.
    fn new(ds: &str, key: u32) -> Rec {
        let ds = dataset(ds);
        Rec {
            dataset: ds,
            key,
            persons: Vec::new(),
            values: ds
                .sent_fields()
                .map(|f| {
                    if f.required {
                        default_value(f)
                    } else {
                        Value { kind: None }
                    }
                })
                .collect(),
        }
    }

    fn index(&self, field: &str) -> usize {
        self.dataset
            .sent_fields()
            .position(|f| f.name.as_str() == field)
            .unwrap_or_else(|| panic!("{} sends no field {field}", self.dataset.name))
    }

    fn set(mut self, field: &str, kind: Kind) -> Rec {
        let i = self.index(field);
        self.values[i] = Value { kind: Some(kind) };
        self
    }

    fn text(self, field: &str, v: &str) -> Rec {
        self.set(field, Kind::Text(v.to_owned()))
    }

    fn int(self, field: &str, v: i64) -> Rec {
        self.set(field, Kind::Int(v))
    }

    fn flag(self, field: &str, v: bool) -> Rec {
        self.set(field, Kind::Flag(v))
    }

    fn person(mut self, role: &str, tokens: &[(&str, u32)]) -> Rec {
        self.persons.push((
            role.to_owned(),
            tokens.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
        ));
        self
    }

    /// The record checked and encoded by the gateway's own validation, ready for the store.
    fn to_new(&self) -> NewRecord {
        let ds = self.dataset;
        let batch = IngestBatch {
            dataset: ds.name.to_string(),
            schema_version: ds.version,
            fields: ds.sent_fields().map(|f| f.name.to_string()).collect(),
            records: vec![],
            batch_id: "test".into(),
        };
        let plan = validate::plan(catalog(), &ds.owner, &batch).expect("a valid batch header");
        let persons: Vec<PersonRole> = self
            .persons
            .iter()
            .map(|(role, tokens)| PersonRole {
                role: role.clone(),
                tokens: tokens
                    .iter()
                    .map(|(kind, n)| TypedToken {
                        kind: kind.clone(),
                        token: token(kind, *n).to_vec(),
                    })
                    .collect(),
                fuzzy: None,
            })
            .collect();
        let key = record_key(ds.name.as_str(), self.key);
        let hash = skp_core::content::content_hash(
            ds.name.as_str(),
            ds.version,
            &key,
            &persons,
            &self.values,
        );
        let rec = Record {
            record_key: key.to_vec(),
            content_hash: hash.to_vec(),
            persons,
            values: self.values.clone(),
            source_line: 0,
        };
        plan.check(&ds.owner, rec, 0)
            .unwrap_or_else(|p| panic!("the gateway refuses a generated record: {p:?}"))
    }
}

fn default_value(f: &Field) -> Value {
    let kind = match f.ty {
        FieldType::Int => Kind::Int(1),
        FieldType::Bool => Kind::Flag(false),
        FieldType::Date => Kind::Date("2024-07-14".into()),
        FieldType::Datetime => Kind::Datetime("2024-07-14T22:15:00".into()),
        FieldType::Enum => Kind::Text(f.values[0].clone()),
        FieldType::Set => Kind::Set(StringSet::default()),
        _ => Kind::Text("x".into()),
    };
    Value { kind: Some(kind) }
}

/// LSOA codes: three of one ward (E05013935), one of another, one in no lookup.
const LSOAS: &[&str] = &[
    "E01002915",
    "E01002916",
    "E01002920",
    "E01002918",
    "E01999999",
];
const WARDS: &[&str] = &["E05013935", "E05013938", "E05013932", "E05099999"];
const OFFENCE_TEXT: &[&str] = &["8N", "34B", "Robbery", "zz"];
const PLAIN_TEXT: &[&str] = &["alpha", "Beta gamma", "x"];

/// The texts generated for a free-text field (by what its name says it holds).
fn text_pool(f: &Field) -> Vec<&'static str> {
    let name = f.name.as_str();
    let pool = if name.ends_with("lsoa21cd") {
        LSOAS
    } else if name.ends_with("wd22cd") {
        WARDS
    } else if name.contains("offence") {
        OFFENCE_TEXT
    } else {
        PLAIN_TEXT
    };
    pool.iter()
        .copied()
        .filter(|t| t.chars().count() <= f.max_len as usize)
        .collect()
}

/// A valid value for `f` from the random number `r` (sometimes missing when not required;
/// ages and hours sometimes out of their transform's range, codes sometimes in no lookup).
fn random_value(f: &Field, r: u32) -> Value {
    if !f.required && r.is_multiple_of(9) {
        return Value { kind: None };
    }
    let r = r / 9;
    let name = f.name.as_str();
    let date = |r: u32| {
        format!(
            "{}-{:02}-{:02}",
            2022 + r % 3,
            1 + (r / 3) % 12,
            1 + (r / 36) % 28
        )
    };
    let kind = match f.ty {
        FieldType::Str => {
            let pool = text_pool(f);
            Kind::Text(pool[r as usize % pool.len()].to_owned())
        }
        FieldType::Int if name.contains("age") => Kind::Int(i64::from(r % 150) - 5),
        FieldType::Int if name.contains("hour") => Kind::Int(i64::from(r % 30)),
        FieldType::Int => Kind::Int(i64::from(r % 40)),
        FieldType::Bool => Kind::Flag(r.is_multiple_of(2)),
        FieldType::Date => Kind::Date(date(r)),
        FieldType::Datetime => Kind::Datetime(format!(
            "{}T{:02}:{:02}:00",
            date(r),
            (r / 1008) % 24,
            (r / 24192) % 60
        )),
        FieldType::Enum => Kind::Text(f.values[r as usize % f.values.len()].clone()),
        FieldType::Set => Kind::Set(StringSet {
            items: subset(&f.values, r),
        }),
        other => panic!("{name} of type {} is sent", other.as_str()),
    };
    Value { kind: Some(kind) }
}

/// The items whose bit (index mod 32) is set in `r`.
fn subset<S: AsRef<str>>(items: &[S], r: u32) -> Vec<String> {
    items
        .iter()
        .enumerate()
        .filter(|(i, _)| (r >> (i % 32)) & 1 == 1)
        .map(|(_, v)| v.as_ref().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Fixtures: the gateway

/// A store, audit log and releaser over one temporary data directory.
struct Gateway {
    audit: AuditLog,
    store: Store,
    releaser: Releaser,
    /// Dropped last: the directory outlives the handles.
    dir: tempfile::TempDir,
}

impl Gateway {
    fn open() -> Gateway {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = SigningKey::from_seed_bytes("kingston.skp/audit", &[7; 32]).expect("audit key");
        let audit = AuditLog::open(dir.path(), key, "kingston.skp/audit/v1").expect("audit log");
        let store = Store::open_audited(dir.path(), Some(audit.clone())).expect("store");
        let releaser = Releaser::new(
            store.clone(),
            audit.clone(),
            catalog().clone(),
            ReleaseKey::from_bytes(&[0x42; 32]),
            dir.path(),
        )
        .expect("releaser");
        Gateway {
            audit,
            store,
            releaser,
            dir,
        }
    }

    fn releases_dir(&self) -> PathBuf {
        self.dir.path().join("releases")
    }

    fn ingest(&self, records: &[Rec]) -> Vec<Outcome> {
        let new: Vec<NewRecord> = records.iter().map(Rec::to_new).collect();
        futures::executor::block_on(self.store.ingest(new)).expect("ingest")
    }

    fn ingest_new(&self, records: &[Rec]) {
        let outcomes = self.ingest(records);
        assert!(
            outcomes.iter().all(|o| *o == Outcome::Accepted),
            "every record is new: {outcomes:?}"
        );
    }

    fn withdraw(&self, ds: &str, keys: &[u32]) {
        let keys = keys.iter().map(|k| record_key(ds, *k)).collect();
        let w = futures::executor::block_on(self.store.withdraw(ds, keys, None)).expect("withdraw");
        assert_eq!(w.not_found, 0, "every record withdrawn was stored");
    }

    fn extract(
        &self,
        policy: &Policy,
        purpose: &str,
        datasets: &[&str],
        fields: &[String],
    ) -> Result<Prepared, ReleaseError> {
        let req = ExtractRequest {
            agreement: AGREEMENT.into(),
            purpose: purpose.into(),
            datasets: datasets.iter().map(|d| (*d).to_owned()).collect(),
        };
        self.releaser
            .extract_fields(policy, &analyst(), &actor(), &req, fields, NOW)
    }

    fn extract_ok(&self, policy: &Policy, purpose: &str, datasets: &[&str]) -> Prepared {
        self.extract(policy, purpose, datasets, &[])
            .unwrap_or_else(|e| panic!("extract {purpose}: {e}"))
    }

    fn aggregate(
        &self,
        policy: &Policy,
        purpose: &str,
        ds: &str,
        by: &[String],
    ) -> Result<Prepared, ReleaseError> {
        let req = AggregateRequest {
            agreement: AGREEMENT.into(),
            purpose: purpose.into(),
            dataset: ds.into(),
            by: by.to_vec(),
        };
        self.releaser
            .aggregate(policy, &analyst(), &actor(), &req, NOW)
    }

    fn entries(&self) -> Vec<Entry> {
        self.audit
            .read(0, self.audit.size())
            .expect("read the audit log")
            .map(|b| Entry::decode(&b.expect("an entry")).expect("a valid entry"))
            .collect()
    }

    /// Names under `data/releases`.
    fn release_files(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.releases_dir())
            .expect("the registry folder")
            .map(|e| {
                e.expect("a folder entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    fn person_releases(&self, kind: &str, n: u32) -> (u64, Vec<String>) {
        let (records, found) = self
            .releaser
            .person_releases(&[(kind.to_owned(), token(kind, n))])
            .expect("person_releases");
        (
            records,
            found.into_iter().map(|r| r.header.release_id).collect(),
        )
    }
}

/// A CSV file's header and rows.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = r
        .headers()
        .expect("a header")
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = r
        .records()
        .map(|x| x.expect("a CSV row").iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

/// The file of `dataset` in a release.
fn release_csv(p: &Prepared, name: &str) -> (Vec<String>, Vec<Vec<String>>) {
    assert!(
        p.files.iter().any(|f| f == name),
        "{name} is in {:?}",
        p.files
    );
    read_csv(&p.dir.join(name))
}

/// Each row's person id of `role`, keyed by the row's value of `key_column`.
fn ids_by(p: &Prepared, ds: &str, key_column: &str, role: &str) -> BTreeMap<String, String> {
    let (header, rows) = release_csv(p, &format!("{ds}.csv"));
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("column {name} in {header:?}"))
    };
    let (k, id) = (col(key_column), col(&format!("{role}_person_id")));
    rows.iter().map(|r| (r[k].clone(), r[id].clone())).collect()
}

fn is_person_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The released text of a stored value under `t` (empty: nothing released, or withheld because
/// the transform cannot read it), and whether it was withheld. For `keep`, the stored value as
/// text, written here independently of the transform code.
fn released(t: Transform, v: &Value) -> (Option<String>, bool) {
    if t == Transform::Keep {
        let text = match &v.kind {
            None => return (None, false),
            Some(Kind::Text(s) | Kind::Date(s) | Kind::Datetime(s)) => s.clone(),
            Some(Kind::Int(n)) => n.to_string(),
            Some(Kind::Flag(b)) => b.to_string(),
            Some(Kind::Set(s)) => s.items.join("; "),
        };
        return (Some(text), false);
    }
    match t.apply(Cell::from(v)) {
        Ok(x) => (x.map(|c| c.into_owned()), false),
        Err(_) => (None, true),
    }
}

/// Union-find over person roles, the linkage oracle.
struct Components(Vec<usize>);

impl Components {
    fn new(n: usize) -> Self {
        Components((0..n).collect())
    }
    fn find(&mut self, x: usize) -> usize {
        let mut x = x;
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.0[a] = b;
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Nothing beyond the ISA (property test)

/// A generated row condition, with its own evaluation (the oracle of the row filter).
#[derive(Debug, Clone)]
enum Cond {
    In(String, Vec<String>),
    Range(String, Option<i64>, Option<i64>),
    Is(String, bool),
    Or(Vec<Cond>),
}

impl Cond {
    fn toml(&self) -> String {
        match self {
            Cond::In(f, v) => format!("{{ field = {}, in = {} }}", q(f), q_list(v)),
            Cond::Range(f, lo, hi) => {
                let mut s = format!("{{ field = {}", q(f));
                if let Some(lo) = lo {
                    s += &format!(", min = {lo}");
                }
                if let Some(hi) = hi {
                    s += &format!(", max = {hi}");
                }
                s + " }"
            }
            Cond::Is(f, b) => format!("{{ field = {}, is = {b} }}", q(f)),
            Cond::Or(cs) => format!(
                "{{ field = \"\", or = [{}] }}",
                cs.iter().map(Cond::toml).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn holds(&self, rec: &Rec) -> bool {
        let value = |f: &str| rec.values[rec.index(f)].kind.as_ref();
        match self {
            Cond::In(f, v) => match value(f) {
                Some(Kind::Text(s)) => v.contains(s),
                Some(Kind::Int(n)) => v.contains(&n.to_string()),
                Some(Kind::Set(s)) => s.items.iter().any(|x| v.contains(x)),
                _ => false,
            },
            Cond::Range(f, lo, hi) => match value(f) {
                Some(Kind::Int(n)) => lo.is_none_or(|l| *n >= l) && hi.is_none_or(|h| *n <= h),
                _ => false,
            },
            Cond::Is(f, b) => matches!(value(f), Some(Kind::Flag(x)) if x == b),
            Cond::Or(cs) => cs.iter().any(|c| c.holds(rec)),
        }
    }
}

/// A condition on a field of `ds` picked by `pick`, shaped by `r`.
fn random_cond(ds: &Dataset, pick: &Index, r: u32) -> Option<Cond> {
    let fields: Vec<&Field> = ds
        .sent_fields()
        .filter(|f| {
            matches!(
                f.ty,
                FieldType::Enum
                    | FieldType::Set
                    | FieldType::Int
                    | FieldType::Bool
                    | FieldType::Str
            )
        })
        .collect();
    if fields.is_empty() {
        return None;
    }
    let f = *pick.get(&fields);
    let name = f.name.as_str().to_owned();
    Some(match f.ty {
        FieldType::Enum | FieldType::Set => Cond::In(name, subset(&f.values, r)),
        FieldType::Str => Cond::In(name, subset(&text_pool(f), r)),
        FieldType::Int => {
            let lo = i64::from(r % 50) - 5;
            let hi = lo + i64::from((r >> 8) % 60);
            match (r >> 20) % 3 {
                0 => Cond::Range(name, Some(lo), None),
                1 => Cond::Range(name, None, Some(hi)),
                _ => Cond::Range(name, Some(lo), Some(hi)),
            }
        }
        _ => Cond::Is(name, r.is_multiple_of(2)),
    })
}

/// The dispositions an ISA may give a field (as in the policy tests): `deny` for direct
/// identifiers, otherwise `keep`, `deny` and every transform that fits the field.
fn candidates(f: &Field) -> Vec<&'static str> {
    if f.class == FieldClass::Direct {
        return vec!["deny"];
    }
    let mut v = vec!["keep", "deny"];
    v.extend(
        Transform::ALL
            .iter()
            .filter(|t| !matches!(t, Transform::Keep | Transform::Deny) && t.applies_to_field(f))
            .map(|t| t.name()),
    );
    v
}

/// What the ISA says is released of a field asked with `want`: the coarser of the two, `None`
/// when nothing is.
fn expected_transform(disp: Disposition, want: Option<Transform>) -> Option<Transform> {
    let t = match (disp, want) {
        (Disposition::Deny, _) => return None,
        (Disposition::Keep, None) => Transform::Keep,
        (Disposition::Keep, Some(t)) => t,
        (Disposition::Generalise(g), None) => g,
        (Disposition::Generalise(g), Some(t)) if coarser_or_equal(t, g) => t,
        (Disposition::Generalise(g), Some(_)) => g,
    };
    (!t.releases_nothing()).then_some(t)
}

/// The transform an ISA disposition allows at most.
fn isa_transform(disp: Disposition) -> Transform {
    match disp {
        Disposition::Keep => Transform::Keep,
        Disposition::Deny => Transform::Deny,
        Disposition::Generalise(g) => g,
    }
}

/// The transform the release's audit entry names for `ds.field`.
fn entry_transform(p: &Prepared, ds: &str, field: &str) -> Transform {
    let entry = Entry::decode(p.manifest.audit.entry.as_bytes()).expect("the bound entry");
    let prefix = format!("{ds}.{field}:");
    let named = entry
        .fields
        .iter()
        .find_map(|f| f.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the entry names {prefix}…: {:?}", entry.fields));
    Transform::parse(named).expect("a transform name in the entry")
}

/// No spool folder and no person list of an unfinished release is left.
fn assert_nothing_left(gw: &Gateway) {
    let left: Vec<String> = gw
        .release_files()
        .into_iter()
        .filter(|n| n.starts_with("spool-") || n.ends_with(".tmp") || n.ends_with(".persons"))
        .filter(|n| {
            // A .persons file of a committed release (with its .entry) is fine.
            n.strip_suffix(".persons")
                .is_none_or(|id| !gw.releases_dir().join(format!("{id}.entry")).exists())
        })
        .collect();
    assert!(left.is_empty(), "left behind under data/releases: {left:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For random ISAs (dispositions, row filter, person roles, linkage), random requests and
    /// random records: every released column is a person id of a role the ISA lists or a field
    /// it keeps or generalises; every value is the stored value through the transform the ISA
    /// allows (or a coarser one asked for); exactly the rows the filter admits are released;
    /// person ids follow the linkage the purpose allows; a refused request leaves nothing.
    #[test]
    fn an_extract_releases_nothing_beyond_the_isa(
        ds_pick in any::<Index>(),
        disp_picks in proptest::collection::vec(any::<Index>(), 64),
        filters in proptest::collection::vec(
            (any::<Index>(), any::<u32>(), proptest::option::of((any::<Index>(), any::<u32>()))),
            0..3,
        ),
        roles in proptest::collection::vec(any::<bool>(), 4),
        kinds in proptest::collection::vec(any::<bool>(), 5),
        // Fields asked (two in three requests ask for every field): each bare, with a
        // transform that fits it, or with any transform.
        asked in prop_oneof![
            2 => Just(Vec::new()),
            1 => proptest::collection::vec((any::<Index>(), 0u8..6, any::<Index>()), 1..4),
        ],
        name_dataset in any::<bool>(),
        records in proptest::collection::vec(
            (proptest::collection::vec(any::<u32>(), 64), proptest::collection::vec(any::<u32>(), 4)),
            0..12,
        ),
    ) {
        let datasets: Vec<&Dataset> = catalog().datasets().collect();
        let ds = *ds_pick.get(&datasets);
        let name = ds.name.as_str();

        // The ISA.
        let mut part = Part::deny_all(name);
        for (f, pick) in ds.fields.iter().zip(&disp_picks) {
            let cands = candidates(f);
            let d = pick.get(&cands);
            part = part.with(f.name.as_str(), d);
        }
        let conds: Vec<Cond> = filters
            .iter()
            .filter_map(|(pick, r, or)| {
                let c = random_cond(ds, pick, *r)?;
                Some(match or.as_ref().and_then(|(p, r)| random_cond(ds, p, *r)) {
                    Some(other) => Cond::Or(vec![c, other]),
                    None => c,
                })
            })
            .collect();
        for c in &conds {
            part = part.filter(&c.toml());
        }
        let persons: Vec<&str> = ds
            .roles
            .iter()
            .zip(&roles)
            .filter(|(_, on)| **on)
            .map(|(r, _)| r.name.as_str())
            .collect();
        part = part.persons(&persons);
        let mut linkage: Vec<&str> = ["nhs", "pnc", "demo", "uprn", "ref"]
            .into_iter()
            .zip(&kinds)
            .filter(|(_, on)| **on)
            .map(|(k, _)| k)
            .collect();
        if !persons.is_empty() && linkage.is_empty() {
            linkage.push("demo");
        }
        let disp = part.dispositions();
        let p = policy(&[Purpose::records("p", vec![part]).linkage(&linkage)]);

        // The request: fields asked, each optionally with a transform (one that fits, or any).
        let mut want: Vec<(String, Option<Transform>)> = Vec::new();
        for (fi, mode, ti) in &asked {
            let f = fi.get(&ds.fields);
            if want.iter().any(|(n, _)| n == f.name.as_str()) {
                continue;
            }
            let fitting: Vec<Transform> =
                Transform::ALL.iter().copied().filter(|t| t.applies_to_field(f)).collect();
            let t = match mode {
                3 | 4 if !fitting.is_empty() => Some(*ti.get(&fitting)),
                5 => Some(*ti.get(Transform::ALL)),
                _ => None,
            };
            want.push((f.name.as_str().to_owned(), t));
        }
        let fields: Vec<String> = want
            .iter()
            .map(|(f, t)| match t {
                Some(t) => format!("{name}.{f}:{t}"),
                None => format!("{name}.{f}"),
            })
            .collect();

        // The records.
        let recs: Vec<Rec> = records
            .iter()
            .enumerate()
            .map(|(i, (vals, pers))| {
                let mut r = Rec::new(name, i as u32);
                for (j, f) in ds.sent_fields().enumerate() {
                    r.values[j] = random_value(f, vals[j]);
                }
                for (role, p) in ds.roles.iter().zip(pers) {
                    if p % 4 == 0 {
                        continue;
                    }
                    let tokens: Vec<(String, u32)> = role
                        .tokens
                        .iter()
                        .enumerate()
                        .filter(|(t, _)| (p >> (20 + t)) & 1 == 0)
                        .map(|(t, recipe)| (recipe.kind.clone(), (p >> (4 + 2 * t)) % 4))
                        .collect();
                    r.persons.push((role.name.clone(), tokens));
                }
                r
            })
            .collect();

        let gw = Gateway::open();
        gw.ingest_new(&recs);
        let entries_before = gw.audit.size();
        let named: Vec<&str> = if name_dataset { vec![name] } else { vec![] };
        let result = gw.extract(&p, "p", &named, &fields);

        // What the ISA says should happen.
        let columns: Vec<(String, Transform)> = if want.is_empty() {
            ds.fields
                .iter()
                .filter_map(|f| {
                    let n = f.name.as_str();
                    expected_transform(disp[n], None).map(|t| (n.to_owned(), t))
                })
                .collect()
        } else {
            want.iter()
                .filter_map(|(n, w)| expected_transform(disp[n.as_str()], *w).map(|t| (n.clone(), t)))
                .collect()
        };
        let expected_refusal = if want.iter().any(|(n, t)| {
            t.is_some_and(|t| !t.applies_to_field(ds.field(n).expect("an asked field exists")))
        }) {
            Some("unknown-transform")
        } else if columns.is_empty() {
            Some("no-field-released")
        } else if columns.len() < want.len() {
            Some("isa-deny")
        } else {
            None
        };

        let prepared = match (result, expected_refusal) {
            (Err(ReleaseError::Denied { rule, audit_entry, .. }), Some(expected)) => {
                prop_assert_eq!(rule, expected);
                assert_nothing_left(&gw);
                let entries = gw.entries();
                prop_assert_eq!(entries.len() as u64, entries_before + 1);
                let last = entries.last().expect("the refusal's entry");
                prop_assert_eq!(last.action, Action::Deny);
                prop_assert_eq!(audit_entry, Some(last.seq));
                prop_assert!(!entries.iter().any(|e| e.action == Action::Release));
                return Ok(());
            }
            (Err(e), expected) => {
                return Err(TestCaseError::fail(format!("expected {expected:?}, got error {e}")));
            }
            (Ok(_), Some(expected)) => {
                return Err(TestCaseError::fail(format!("expected refusal {expected}, got a release")));
            }
            (Ok(p), None) => p,
        };

        // Files: the dataset's CSV, then the manifest.
        prop_assert_eq!(&prepared.files, &vec![format!("{name}.csv"), "manifest.json".to_owned()]);
        let (header, rows) = release_csv(&prepared, &format!("{name}.csv"));

        // Columns: person ids of the ISA's roles, then exactly the released fields.
        let person_cols: Vec<String> = persons.iter().map(|r| format!("{r}_person_id")).collect();
        prop_assert_eq!(&header[..person_cols.len().min(header.len())], &person_cols[..]);
        let data_cols: Vec<String> = header[person_cols.len()..].to_vec();
        let want_cols: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
        prop_assert_eq!(&data_cols, &want_cols);
        for col in &data_cols {
            let d = disp[col.as_str()];
            prop_assert!(
                matches!(d, Disposition::Keep)
                    || matches!(d, Disposition::Generalise(g) if !g.releases_nothing()),
                "{} is {} in the ISA but released", col, d.name()
            );
            prop_assert!(ds.field(col).is_some_and(|f| f.class != FieldClass::Direct));
        }

        // Transforms: what the ISA allows (or coarser, as asked), as the audit entry says.
        for (col, t) in &columns {
            let named = entry_transform(&prepared, name, col);
            prop_assert_eq!(named, *t, "{}", col);
            prop_assert!(coarser_or_equal(named, isa_transform(disp[col.as_str()])));
        }

        // Rows: exactly the admitted records, in store order, each value transformed.
        let admitted: Vec<&Rec> = recs.iter().filter(|r| conds.iter().all(|c| c.holds(r))).collect();
        prop_assert_eq!(rows.len(), admitted.len(), "rows released vs admitted by the filter");
        let mut withheld = 0u64;
        for (row, rec) in rows.iter().zip(&admitted) {
            for (k, (col, t)) in columns.iter().enumerate() {
                let (text, w) = released(*t, &rec.values[rec.index(col)]);
                withheld += u64::from(w);
                prop_assert_eq!(
                    &row[person_cols.len() + k],
                    &text.unwrap_or_default(),
                    "record {} field {} under {}", rec.key, col, t
                );
            }
        }
        let file = &prepared.manifest.release.files[0];
        prop_assert_eq!(file.rows, admitted.len() as u64);
        prop_assert_eq!(file.suppressed_rows, 0);
        prop_assert_eq!(file.withheld_cells, withheld);

        // Person ids: present iff the record has the role; equal iff linked on allowed kinds
        // through the rows the filter admits and the roles the purpose releases (all there
        // is: the records are all of this one dataset).
        let mut nodes: Vec<(usize, &str)> = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            if !conds.iter().all(|c| c.holds(r)) {
                continue;
            }
            for (role, _) in &r.persons {
                if persons.iter().any(|p| AsRef::<str>::as_ref(p) == role.as_str()) {
                    nodes.push((i, role.as_str()));
                }
            }
        }
        let mut uf = Components::new(nodes.len());
        let mut first: HashMap<(&str, u32), usize> = HashMap::new();
        for (n, (i, role)) in nodes.iter().enumerate() {
            let tokens = &recs[*i].persons.iter().find(|(r, _)| r == role).expect("the role").1;
            for (kind, t) in tokens {
                if !linkage.contains(&kind.as_str()) {
                    continue;
                }
                match first.get(&(kind.as_str(), *t)) {
                    Some(&m) => uf.union(n, m),
                    None => {
                        first.insert((kind.as_str(), *t), n);
                    }
                }
            }
        }
        let mut released_ids: Vec<(usize, String)> = Vec::new();
        for (row, rec) in rows.iter().zip(&admitted) {
            let i = recs.iter().position(|r| r.key == rec.key).expect("the record");
            for (c, role) in persons.iter().enumerate() {
                let id = &row[c];
                match nodes.iter().position(|(j, r)| *j == i && r == role) {
                    Some(n) => {
                        prop_assert!(is_person_id(id), "record {} role {}: {:?}", rec.key, role, id);
                        released_ids.push((n, id.clone()));
                    }
                    None => prop_assert_eq!(id, "", "record {} has no {}", rec.key, role),
                }
            }
        }
        for (a, ida) in &released_ids {
            for (b, idb) in &released_ids {
                prop_assert_eq!(uf.find(*a) == uf.find(*b), ida == idb, "nodes {:?} and {:?}", nodes[*a], nodes[*b]);
            }
        }

        // The release's entry is in the log, after the records, and nothing else was appended.
        let entries = gw.entries();
        prop_assert_eq!(entries.len() as u64, entries_before + 1);
        prop_assert_eq!(entries.last().map(|e| e.action), Some(Action::Release));
        prop_assert_eq!(prepared.audit_entry, entries_before);
        let entry = Entry::decode(prepared.manifest.audit.entry.as_bytes()).expect("the entry");
        prop_assert_eq!(entry.rows, Some(admitted.len() as u64));
        prop_assert_eq!(entry.release.as_deref(), Some(prepared.release_id.as_str()));
    }
}

// ---------------------------------------------------------------------------------------------
// 2. k-anonymity against the oracle

const K: u64 = 3;

/// police_crime released with quasi-identifiers sex, age band and ward; k = 3; a filter on the
/// weapon.
fn k_purpose() -> Purpose {
    let part = Part::deny_all("police_crime")
        .with("victim_no", "keep")
        .with("ho_offence_code", "keep")
        .with("victim_sex", "keep")
        .with("victim_age", "age_band_sv")
        .with("lsoa21cd", "ward")
        .with("weapon_type", "keep")
        .filter(r#"{ field = "weapon_type", in = ["Knife", "None"] }"#)
        .persons(&["victim"]);
    Purpose {
        k: K,
        quasi_identifiers: vec!["victim_sex".into(), "victim_age".into(), "lsoa21cd".into()],
        ..Purpose::records("k3", vec![part]).linkage(&["pnc"])
    }
}

fn crime(key: u32, sex: &str, age: i64, lsoa: &str, weapon: &str) -> Rec {
    Rec::new("police_crime", key)
        .int("victim_no", i64::from(key))
        .text("victim_sex", sex)
        .int("victim_age", age)
        .text("lsoa21cd", lsoa)
        .text("weapon_type", weapon)
        .person("victim", &[("pnc", key)])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Every quasi-identifier class released has at least k rows, and the rows kept and
    /// suppressed are exactly those `disclosure::k_anonymity` keeps and suppresses among the
    /// rows the filter admits (classes over released values: ages 16 and 17 are one band, two
    /// LSOAs of one ward one ward, a code in no lookup an empty cell).
    #[test]
    fn k_anonymity_keeps_what_the_oracle_keeps(
        picks in proptest::collection::vec((0usize..3, 0usize..6, 0usize..5, 0usize..3), 0..40),
    ) {
        const SEXES: &[&str] = &["F", "M", "Unknown"];
        const AGES: &[i64] = &[16, 17, 20, 22, 30, 200];
        const WEAPONS: &[&str] = &["Knife", "None", "Blunt"];
        // Always a class of three and a class of one (no generated record is 65+).
        let mut recs = vec![
            crime(1000, "F", 20, "E01002915", "Knife"),
            crime(1001, "F", 21, "E01002916", "None"),
            crime(1002, "F", 23, "E01002920", "Knife"),
            crime(1003, "M", 70, "E01002918", "Knife"),
        ];
        for (i, (s, a, l, w)) in picks.iter().enumerate() {
            recs.push(crime(i as u32, SEXES[*s], AGES[*a], LSOAS[*l], WEAPONS[*w]));
        }
        let gw = Gateway::open();
        gw.ingest_new(&recs);
        let p = policy(&[k_purpose()]);
        let prepared = gw.extract_ok(&p, "k3", &["police_crime"]);
        let (header, rows) = release_csv(&prepared, "police_crime.csv");
        prop_assert_eq!(&header[0], "victim_person_id");
        let cols: Vec<&str> = header[1..].iter().map(String::as_str).collect();
        prop_assert_eq!(
            &cols,
            &["victim_no", "ho_offence_code", "lsoa21cd", "victim_sex", "victim_age", "weapon_type"]
        );

        // The oracle's input: the admitted rows as released, before k-anonymity.
        let transforms = [
            Transform::Keep,
            Transform::Keep,
            Transform::Ward,
            Transform::Keep,
            Transform::AgeBandSv,
            Transform::Keep,
        ];
        let model: Vec<Vec<Option<String>>> = recs
            .iter()
            .filter(|r| {
                matches!(&r.values[r.index("weapon_type")].kind, Some(Kind::Text(w)) if w == "Knife" || w == "None")
            })
            .map(|r| {
                cols.iter()
                    .zip(transforms)
                    .map(|(c, t)| released(t, &r.values[r.index(c)]).0)
                    .collect()
            })
            .collect();
        let qi: Vec<usize> = ["victim_sex", "victim_age", "lsoa21cd"]
            .iter()
            .map(|q| cols.iter().position(|c| c == q).expect("a QI column"))
            .collect();
        let oracle = disclosure::k_anonymity(&model, &qi, K).expect("k-anonymity");
        let kept: Vec<Vec<String>> = model
            .iter()
            .zip(&oracle.keep)
            .filter(|(_, k)| **k)
            .map(|(r, _)| r.iter().map(|c| c.clone().unwrap_or_default()).collect())
            .collect();
        let data: Vec<Vec<String>> = rows.iter().map(|r| r[1..].to_vec()).collect();
        prop_assert_eq!(&data, &kept, "rows kept differ from the oracle's");
        prop_assert!(oracle.suppressed_rows >= 1 && !kept.is_empty(), "the fixture has both");
        let file = &prepared.manifest.release.files[0];
        prop_assert_eq!(file.suppressed_rows, oracle.suppressed_rows);
        prop_assert_eq!(file.rows, kept.len() as u64);

        // Every released class has at least k rows, and every released row a person id.
        let mut classes: HashMap<Vec<&str>, u64> = HashMap::new();
        for r in &rows {
            *classes.entry(qi.iter().map(|&i| r[1 + i].as_str()).collect()).or_default() += 1;
            prop_assert!(is_person_id(&r[0]));
        }
        for (class, n) in &classes {
            prop_assert!(*n >= K, "class {:?} has {} rows", class, n);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Aggregate tables against the audit and a brute-force attacker

/// Fields a table may be counted by, with their ISA dispositions.
const BY: &[(&str, &str)] = &[
    ("victim_sex", "keep"),
    ("victim_age", "age_band_sv"),
    ("lsoa21cd", "ward"),
    ("weapon_type", "keep"),
    ("da_flag", "keep"),
];

/// A published table read back from its CSV: the `Protected` a reader sees and the labels.
fn published_table(
    header: &[String],
    rows: &[Vec<String>],
    ways: usize,
    health: bool,
) -> Protected {
    let cell = |s: &str| match s {
        "c" | "*" => {
            assert_eq!(
                s == "*",
                health,
                "suppression symbol {s:?} under health rule {health}"
            );
            DCell::Suppressed
        }
        n => DCell::Count(n.parse().unwrap_or_else(|_| panic!("a count: {n:?}"))),
    };
    let (body, total) = rows.split_at(rows.len() - 1);
    let total = &total[0];
    assert_eq!(total[0], "total");
    let labels: Vec<String> = body.iter().map(|r| r[0].clone()).collect();
    if ways == 1 {
        // One number per row: the cell and its row total.
        assert_eq!(header.len(), 2);
        let cols = if body.is_empty() {
            vec![]
        } else {
            vec!["count".to_owned()]
        };
        let vals: Vec<DCell> = body.iter().map(|r| cell(&r[1])).collect();
        let grand = cell(&total[1]);
        return Protected {
            rows: labels,
            cells: vals.iter().map(|v| vec![*v; cols.len()]).collect(),
            row_totals: vals,
            col_totals: vec![grand; cols.len()],
            cols,
            grand_total: grand,
            suppressed_primary: 0,
            suppressed_secondary: 0,
            rounded: health,
        };
    }
    assert_eq!(header.last().map(String::as_str), Some("total"));
    let cols: Vec<String> = header[1..header.len() - 1].to_vec();
    let c = cols.len();
    Protected {
        rows: labels,
        cells: body
            .iter()
            .map(|r| r[1..=c].iter().map(|s| cell(s)).collect())
            .collect(),
        row_totals: body.iter().map(|r| cell(&r[c + 1])).collect(),
        col_totals: total[1..=c].iter().map(|s| cell(s)).collect(),
        grand_total: cell(&total[c + 1]),
        cols,
        suppressed_primary: 0,
        suppressed_secondary: 0,
        rounded: health,
    }
}

/// Entry `(i, j)` of the augmented table (`i == rows` / `j == cols` are totals).
fn entry_of(p: &Protected, i: usize, j: usize) -> DCell {
    let (r, c) = (p.rows.len(), p.cols.len());
    match (i < r, j < c) {
        (true, true) => p.cells[i][j],
        (true, false) => p.row_totals[i],
        (false, true) => p.col_totals[j],
        (false, false) => p.grand_total,
    }
}

/// True value of entry `(i, j)` of the augmented table.
fn true_entry(t: &Table, i: usize, j: usize) -> u64 {
    let (r, c) = (t.rows.len(), t.cols.len());
    match (i < r, j < c) {
        (true, true) => t.cells[i][j],
        (true, false) => t.cells[i].iter().sum(),
        (false, true) => t.cells.iter().map(|row| row[j]).sum(),
        (false, false) => t.cells.iter().flatten().sum(),
    }
}

/// Suppressed entries an attacker who knows every shown entry exactly, the threshold, and
/// which suppressed entries are small (`1..m`) or complements (`>= m`) can pin to one value,
/// found by enumerating every assignment within one of the true values (a second feasible value,
/// when there is one, is reachable by moving each entry of a cycle by one). `None` when there
/// are too many unknowns.
fn brute_force_pinned(t: &Table, p: &Protected, m: u64) -> Option<Vec<(usize, usize)>> {
    let (r, c) = (t.rows.len(), t.cols.len());
    let mut unknowns = Vec::new();
    for i in 0..=r {
        for j in 0..=c {
            if entry_of(p, i, j) == DCell::Suppressed {
                let v = true_entry(t, i, j);
                let (lo, hi) = if v >= 1 && v < m {
                    (1, m - 1)
                } else {
                    (m, u64::MAX)
                };
                unknowns.push(((i, j), lo.max(v.saturating_sub(1)), hi.min(v + 1)));
            }
        }
    }
    if unknowns.len() > 8 {
        return None;
    }
    let value = |assign: &[u64], i: usize, j: usize| match entry_of(p, i, j) {
        DCell::Count(v) => v,
        DCell::Suppressed => {
            let n = unknowns
                .iter()
                .position(|(pos, _, _)| *pos == (i, j))
                .expect("an unknown");
            assign[n]
        }
    };
    let feasible = |assign: &[u64]| {
        (0..=r).all(|i| (0..c).map(|j| value(assign, i, j)).sum::<u64>() == value(assign, i, c))
            && (0..=c)
                .all(|j| (0..r).map(|i| value(assign, i, j)).sum::<u64>() == value(assign, r, j))
    };
    let mut seen: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); unknowns.len()];
    let mut assign: Vec<u64> = unknowns.iter().map(|(_, lo, _)| *lo).collect();
    loop {
        if feasible(&assign) {
            for (s, v) in seen.iter_mut().zip(&assign) {
                s.insert(*v);
            }
        }
        // Next assignment (odometer).
        let mut n = 0;
        loop {
            if n == unknowns.len() {
                return Some(
                    unknowns
                        .iter()
                        .zip(&seen)
                        .filter(|(_, s)| s.len() < 2)
                        .map(|((pos, _, _), _)| *pos)
                        .collect(),
                );
            }
            if assign[n] < unknowns[n].2 {
                assign[n] += 1;
                break;
            }
            assign[n] = unknowns[n].1;
            n += 1;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A counts table, read back from its CSV: rows and columns are the released categories;
    /// every shown entry (totals too) is the true count (rounded to 5 under the health rule);
    /// every small entry is suppressed and zeros are shown; and no suppressed entry can be
    /// pinned, by `disclosure::audit` and by brute force.
    #[test]
    fn a_table_shows_true_counts_and_pins_no_suppressed_cell(
        picks in proptest::collection::vec((0usize..3, 0usize..6, 0usize..5, 0usize..4, any::<bool>()), 0..60),
        by in Just((0..BY.len()).collect::<Vec<usize>>()).prop_shuffle(),
        ways in 1usize..=3,
        min_cell in prop_oneof![Just(3u64), Just(5), Just(10)],
        health in any::<bool>(),
    ) {
        const SEXES: &[&str] = &["F", "M", "Unknown"];
        const AGES: &[i64] = &[16, 17, 20, 30, 50, 200];
        const WEAPONS: &[&str] = &["Knife", "None", "Blunt", ""];
        let mut part = Part::deny_all("police_crime");
        for (f, d) in BY {
            part = part.with(f, d);
        }
        let purpose = Purpose {
            min_cell,
            health_rule: health,
            ..Purpose::aggregate("counts", vec![part])
        };
        let p = policy(&[purpose]);
        let recs: Vec<Rec> = picks
            .iter()
            .enumerate()
            .map(|(i, (s, a, l, w, da))| {
                let mut r = Rec::new("police_crime", i as u32)
                    .text("victim_sex", SEXES[*s])
                    .int("victim_age", AGES[*a])
                    .text("lsoa21cd", LSOAS[*l])
                    .flag("da_flag", *da);
                if !WEAPONS[*w].is_empty() {
                    r = r.text("weapon_type", WEAPONS[*w]);
                }
                r
            })
            .collect();
        let gw = Gateway::open();
        gw.ingest_new(&recs);
        let by: Vec<(&str, Transform)> = by[..ways]
            .iter()
            .map(|i| (BY[*i].0, isa_transform(disposition(BY[*i].1))))
            .collect();
        let asked: Vec<String> = by.iter().map(|(f, _)| (*f).to_owned()).collect();
        // The true table: records counted by their released labels.
        let label = |r: &Rec, (f, t): &(&str, Transform)| {
            released(*t, &r.values[r.index(f)]).0.unwrap_or_else(|| "(missing)".to_owned())
        };
        let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
        for r in &recs {
            let row = label(r, &by[0]);
            let col = if ways == 1 {
                "count".to_owned()
            } else {
                by[1..].iter().map(|b| label(r, b)).collect::<Vec<_>>().join(" | ")
            };
            *counts.entry((row, col)).or_default() += 1;
        }
        let row_labels: Vec<String> =
            counts.keys().map(|(r, _)| r.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let col_labels: Vec<String> =
            counts.keys().map(|(_, c)| c.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let table = Table {
            cells: row_labels
                .iter()
                .map(|r| {
                    col_labels
                        .iter()
                        .map(|c| counts.get(&(r.clone(), c.clone())).copied().unwrap_or(0))
                        .collect()
                })
                .collect(),
            rows: row_labels,
            cols: col_labels,
        };

        let result = gw.aggregate(&p, "counts", "police_crime", &asked);
        let settings = disclosure::Settings { min_cell, health_rule: health, k: 1 };
        let prepared = match result {
            Ok(prepared) => prepared,
            // A table the disclosure core cannot protect is refused (fail closed); nothing is
            // released, spooled, registered or audited as released.
            Err(ReleaseError::Denied { rule, message: m, .. })
                if disclosure::protect_table(&table, &settings).is_err() =>
            {
                prop_assert_eq!(rule, "unprotectable-table");
                prop_assert!(m.contains("secondary suppression could not protect"), "{}", m);
                prop_assert!(gw.release_files().is_empty(), "{:?}", gw.release_files());
                prop_assert!(!gw.entries().iter().any(|e| e.action == Action::Release));
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("aggregate of {:?}: {e}", table.cells))),
        };
        let name = format!("police_crime_by_{}.csv", asked.join("_"));
        prop_assert_eq!(&prepared.files, &vec![name.clone(), "manifest.json".to_owned()]);
        let (header, rows) = release_csv(&prepared, &name);

        let published = published_table(&header, &rows, ways, health);
        prop_assert_eq!(&published.rows, &table.rows);
        prop_assert_eq!(&published.cols, &table.cols);
        if ways == 1 {
            prop_assert_eq!(&header, &vec![by[0].0.to_owned(), "count".to_owned()]);
        } else {
            let rest: Vec<&str> = by[1..].iter().map(|b| b.0).collect();
            prop_assert_eq!(&header[0], &format!("{} \\ {}", by[0].0, rest.join(" | ")));
        }
        let (r, c) = (table.rows.len(), table.cols.len());
        for i in 0..=r {
            for j in 0..=c {
                let truth = true_entry(&table, i, j);
                match entry_of(&published, i, j) {
                    DCell::Count(shown) => {
                        prop_assert!(truth == 0 || truth >= min_cell, "entry {:?} of {} shown", (i, j), truth);
                        if health {
                            prop_assert_eq!(shown % 5, 0);
                            prop_assert_eq!(shown, disclosure::round_to_5(truth), "entry {:?}", (i, j));
                        } else {
                            prop_assert_eq!(shown, truth, "entry {:?}", (i, j));
                        }
                    }
                    DCell::Suppressed => prop_assert!(truth > 0, "a zero at {:?} suppressed", (i, j)),
                }
            }
        }
        let pinned = disclosure::audit(&table, &published, min_cell).expect("audit");
        prop_assert!(pinned.is_empty(), "pinned {:?} in {:?} published {:?}", pinned, table.cells, published);
        if !health && let Some(pinned) = brute_force_pinned(&table, &published, min_cell) {
            prop_assert!(pinned.is_empty(), "brute force pins {:?} in {:?}", pinned, table.cells);
        }
        let file = &prepared.manifest.release.files[0];
        prop_assert_eq!(file.rows, r as u64);
    }
}

/// A table no suppression can protect (two 1s in a row whose total is itself small: under the
/// attacker of `disclosure`, who knows which entries are small, both are 1) is refused. The
/// refusal should be an audited denial telling the analyst why, not an internal failure.
#[test]
fn a_table_no_suppression_can_protect_is_refused_as_an_audited_denial() {
    let gw = Gateway::open();
    gw.ingest_new(&[
        Rec::new("police_crime", 1)
            .text("victim_sex", "F")
            .flag("da_flag", true),
        Rec::new("police_crime", 2)
            .text("victim_sex", "F")
            .flag("da_flag", false),
    ]);
    let part = Part::deny_all("police_crime")
        .with("victim_sex", "keep")
        .with("da_flag", "keep");
    let p = policy(&[Purpose {
        min_cell: 3,
        ..Purpose::aggregate("counts", vec![part])
    }]);
    let before = gw.audit.size();
    match gw.aggregate(
        &p,
        "counts",
        "police_crime",
        &["victim_sex".into(), "da_flag".into()],
    ) {
        Err(ReleaseError::Denied { audit_entry, .. }) => {
            assert_eq!(audit_entry, Some(before), "the refusal is audited");
        }
        Err(e) => panic!("expected an audited denial, got {e:?}"),
        Ok(r) => panic!("released {:?}", r.files),
    }
    assert!(gw.release_files().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. The audit entry cannot be written: nothing is released

/// police_crime with the victim's person id, linked on PNC.
fn crimes_purpose(id: &str, linkage: &[&str]) -> Purpose {
    let part = Part::deny_all("police_crime")
        .with("victim_no", "keep")
        .with("ho_offence_code", "keep")
        .with("da_flag", "keep")
        .persons(&["victim", "suspect"]);
    Purpose::records(id, vec![part]).linkage(linkage)
}

#[test]
fn a_release_whose_audit_entry_fails_leaves_nothing_and_succeeds_once_the_fault_clears() {
    let gw = Gateway::open();
    gw.ingest_new(&[
        Rec::new("police_crime", 1).person("victim", &[("pnc", 1)]),
        Rec::new("police_crime", 2).person("victim", &[("pnc", 2)]),
    ]);
    let agg = Purpose::aggregate(
        "counts",
        vec![Part::deny_all("police_crime").with("victim_sex", "keep")],
    );
    let p = policy(&[crimes_purpose("crimes", &["pnc"]), agg]);
    let before = gw.audit.size();

    gw.audit.fail_next_appends(1);
    match gw.extract(&p, "crimes", &["police_crime"], &[]) {
        Err(ReleaseError::Audit(e)) => {
            assert!(e.to_string().contains("cannot be written"), "{e}")
        }
        Err(e) => panic!("expected an audit failure, got {e}"),
        Ok(r) => panic!("released {} with no audit entry", r.release_id),
    }
    gw.audit.fail_next_appends(1);
    match gw.aggregate(&p, "counts", "police_crime", &["victim_sex".into()]) {
        Err(ReleaseError::Audit(_)) => {}
        Err(e) => panic!("expected an audit failure, got {e}"),
        Ok(r) => panic!("released {} with no audit entry", r.release_id),
    }
    assert!(
        gw.release_files().is_empty(),
        "no spool folder, person list or entry index is left: {:?}",
        gw.release_files()
    );
    assert!(gw.releaser.registry().list().expect("list").is_empty());
    assert_eq!(gw.audit.size(), before, "nothing was appended");
    assert!(!gw.entries().iter().any(|e| e.action == Action::Release));
    assert_eq!(
        gw.person_releases("pnc", 1),
        (1, vec![]),
        "no release names the person"
    );

    // The fault has cleared: the same requests succeed and are registered and audited.
    let extract = gw.extract_ok(&p, "crimes", &["police_crime"]);
    let table = gw
        .aggregate(&p, "counts", "police_crime", &["victim_sex".into()])
        .expect("aggregate after the fault");
    let entries = gw.entries();
    let released: Vec<&str> = entries
        .iter()
        .filter(|e| e.action == Action::Release)
        .filter_map(|e| e.release.as_deref())
        .collect();
    assert_eq!(
        released,
        vec![extract.release_id.as_str(), table.release_id.as_str()]
    );
    let files = gw.release_files();
    for p in [&extract, &table] {
        for ext in ["persons", "entry"] {
            assert!(
                files.contains(&format!("{}.{ext}", p.release_id)),
                "{files:?}"
            );
        }
        assert!(p.dir.join("manifest.json").exists());
    }
    assert_eq!(gw.releaser.registry().list().expect("list").len(), 2);
    let spool = extract.dir.clone();
    drop(extract);
    assert!(!spool.exists(), "the spool is removed once sent");
}

// ---------------------------------------------------------------------------------------------
// 5. Person ids

#[test]
fn person_ids_are_stable_per_purpose_disjoint_across_purposes_and_follow_the_allowed_kinds() {
    let gw = Gateway::open();
    gw.ingest_new(&[
        // 1 and 2 share a PNC token; 3 shares only a demographic token with 1; 4's suspect has
        // 1's PNC token; 5 has no victim.
        Rec::new("police_crime", 1)
            .int("victim_no", 1)
            .person("victim", &[("pnc", 1), ("demo", 1)]),
        Rec::new("police_crime", 2)
            .int("victim_no", 2)
            .person("victim", &[("pnc", 1), ("demo", 2)]),
        Rec::new("police_crime", 3)
            .int("victim_no", 3)
            .person("victim", &[("pnc", 3), ("demo", 1)]),
        Rec::new("police_crime", 4)
            .int("victim_no", 4)
            .person("victim", &[("demo", 4)])
            .person("suspect", &[("pnc", 1)]),
        Rec::new("police_crime", 5)
            .int("victim_no", 5)
            .person("suspect", &[("demo", 5)]),
    ]);
    let p = policy(&[
        crimes_purpose("pnc-a", &["pnc"]),
        crimes_purpose("pnc-b", &["pnc"]),
        crimes_purpose("pnc-demo", &["pnc", "demo"]),
    ]);
    let victims = |purpose: &str| {
        let r = gw.extract_ok(&p, purpose, &["police_crime"]);
        (
            ids_by(&r, "police_crime", "victim_no", "victim"),
            ids_by(&r, "police_crime", "victim_no", "suspect"),
        )
    };
    let (a, a_suspects) = victims("pnc-a");
    assert_eq!(a.len(), 5);
    for n in ["1", "2", "3", "4"] {
        assert!(is_person_id(&a[n]), "record {n}: {:?}", a[n]);
    }
    assert_eq!(a["5"], "", "no victim, no id");

    // The same agreement and purpose again: the same ids.
    assert_eq!(victims("pnc-a"), (a.clone(), a_suspects.clone()));

    // Linked on PNC: 1, 2 and the suspect of 4 are one person; a shared demographic token does
    // not link under a PNC-only purpose.
    assert_eq!(a["1"], a["2"]);
    assert_eq!(a["1"], a_suspects["4"]);
    assert_ne!(a["1"], a["3"], "3 shares only a demo token with 1");
    assert_ne!(a["1"], a["4"]);
    assert_ne!(a["3"], a["4"]);
    assert_ne!(a_suspects["5"], a["4"]);

    // Another purpose with the same linkage: the same partition, no id in common.
    let (b, b_suspects) = victims("pnc-b");
    let ids = |m: &BTreeMap<String, String>, s: &BTreeMap<String, String>| {
        m.values()
            .chain(s.values())
            .filter(|v| !v.is_empty())
            .cloned()
            .collect::<BTreeSet<String>>()
    };
    let (ids_a, ids_b) = (ids(&a, &a_suspects), ids(&b, &b_suspects));
    assert_eq!(ids_a.len(), 4, "four people under PNC linkage: {ids_a:?}");
    assert_eq!(ids_b.len(), ids_a.len());
    assert!(ids_a.is_disjoint(&ids_b), "ids of two purposes overlap");
    assert_eq!(b["1"], b["2"]);
    assert_ne!(b["1"], b["3"]);

    // A purpose that also links on the demographic token joins 3 to 1.
    let (c, _) = victims("pnc-demo");
    assert_eq!(c["1"], c["3"]);
    assert_eq!(c["1"], c["2"]);
    assert_ne!(c["1"], c["4"]);
    assert!(ids(&c, &BTreeMap::new()).is_disjoint(&ids_a));
}

/// A purpose links only through the records of its own datasets: two crime victims joined
/// only by a probation record are two people to a purpose without probation data, one person to
/// a purpose with it.
#[test]
fn a_purpose_links_only_through_the_datasets_it_releases() {
    let gw = Gateway::open();
    gw.ingest_new(&[
        Rec::new("police_crime", 1)
            .int("victim_no", 1)
            .person("victim", &[("pnc", 1)]),
        Rec::new("police_crime", 2)
            .int("victim_no", 2)
            .person("victim", &[("demo", 7)]),
        Rec::new("probation_caseload", 1)
            .int("event_no", 1)
            .person("person", &[("pnc", 1), ("demo", 7)]),
    ]);
    let crimes = || {
        Part::deny_all("police_crime")
            .with("victim_no", "keep")
            .persons(&["victim"])
    };
    let probation = Part::deny_all("probation_caseload")
        .with("event_no", "keep")
        .persons(&["person"]);
    let p = policy(&[
        Purpose::records("crimes", vec![crimes()]).linkage(&["pnc", "demo"]),
        Purpose::records("crimes-probation", vec![crimes(), probation]).linkage(&["pnc", "demo"]),
    ]);
    let only = gw.extract_ok(&p, "crimes", &[]);
    let ids = ids_by(&only, "police_crime", "victim_no", "victim");
    assert_ne!(
        ids["1"], ids["2"],
        "linked through data the purpose does not hold"
    );

    let joint = gw.extract_ok(&p, "crimes-probation", &[]);
    assert_eq!(
        joint.files,
        vec![
            "police_crime.csv".to_owned(),
            "probation_caseload.csv".to_owned(),
            "manifest.json".to_owned()
        ]
    );
    let victims = ids_by(&joint, "police_crime", "victim_no", "victim");
    let people = ids_by(&joint, "probation_caseload", "event_no", "person");
    assert_eq!(victims["1"], victims["2"]);
    assert_eq!(victims["1"], people["1"], "one id across the two files");
    let linkage = joint
        .manifest
        .release
        .linkage
        .as_ref()
        .expect("linkage summary");
    assert_eq!(linkage.clusters, 1);
    assert_eq!(linkage.cross_agency_clusters, 1);
    assert_eq!(linkage.records_linked_across_agencies, 3);
}

// ---------------------------------------------------------------------------------------------
// 6. Who saw this person

/// Two purposes over police_crime with the same linkage, one for DA crimes and one for others.
fn da_purposes() -> Vec<Purpose> {
    let part = |is: bool| {
        Part::deny_all("police_crime")
            .with("victim_no", "keep")
            .filter(&format!("{{ field = \"da_flag\", is = {is} }}"))
            .persons(&["victim"])
    };
    vec![
        Purpose::records("da", vec![part(true)]).linkage(&["pnc"]),
        Purpose::records("not-da", vec![part(false)]).linkage(&["pnc"]),
    ]
}

#[test]
fn person_releases_finds_the_releases_a_person_was_in_and_follows_later_links() {
    let gw = Gateway::open();
    gw.ingest_new(&[
        Rec::new("police_crime", 1)
            .flag("da_flag", true)
            .person("victim", &[("pnc", 1)]),
        Rec::new("police_crime", 2)
            .flag("da_flag", false)
            .person("victim", &[("pnc", 2)]),
    ]);
    let p = policy(&da_purposes());
    let da = gw.extract_ok(&p, "da", &["police_crime"]);
    let not_da = gw.extract_ok(&p, "not-da", &["police_crime"]);
    assert_eq!(
        gw.person_releases("pnc", 1),
        (1, vec![da.release_id.clone()])
    );
    assert_eq!(
        gw.person_releases("pnc", 2),
        (1, vec![not_da.release_id.clone()])
    );
    assert_eq!(gw.person_releases("pnc", 99), (0, vec![]));
    assert_eq!(
        gw.person_releases("demo", 1),
        (0, vec![]),
        "no record carries it"
    );

    // A record stored after the releases, in the da purpose's rows, shares person 1's PNC
    // token and has a token of its own: that token now finds person 1's release (and not the
    // other, which it was not in).
    gw.ingest_new(&[Rec::new("police_crime", 3)
        .flag("da_flag", true)
        .person("victim", &[("pnc", 1), ("demo", 30)])]);
    assert_eq!(
        gw.person_releases("demo", 30),
        (1, vec![da.release_id.clone()])
    );
    // One outside the da rows links nothing in the da purpose (its linkage goes only through
    // the rows it is granted), and the not-da release never held person 1.
    gw.ingest_new(&[Rec::new("police_crime", 4)
        .flag("da_flag", false)
        .person("victim", &[("pnc", 1), ("demo", 40)])]);
    assert_eq!(gw.person_releases("demo", 40), (1, vec![]));
    assert_eq!(
        gw.person_releases("pnc", 1),
        (3, vec![da.release_id.clone()])
    );
    // Both tokens at once: the releases of either, each once.
    let (records, found) = gw
        .releaser
        .person_releases(&[
            ("pnc".into(), token("pnc", 1)),
            ("pnc".into(), token("pnc", 2)),
        ])
        .expect("person_releases");
    assert_eq!(records, 4);
    let found: Vec<String> = found.into_iter().map(|r| r.header.release_id).collect();
    assert_eq!(
        found,
        vec![da.release_id.clone(), not_da.release_id.clone()]
    );
}

/// A person whose row k-anonymity suppressed was not released: no release names them.
#[test]
fn person_releases_does_not_name_a_release_for_a_person_whose_row_was_suppressed() {
    let gw = Gateway::open();
    gw.ingest_new(&[
        crime(1, "F", 20, "E01002915", "Knife"),
        crime(2, "F", 20, "E01002915", "Knife"),
        crime(3, "F", 20, "E01002915", "Knife"),
        crime(4, "M", 70, "E01002918", "Knife"),
        crime(5, "M", 70, "E01002918", "Blunt"),
    ]);
    let p = policy(&[k_purpose()]);
    let r = gw.extract_ok(&p, "k3", &["police_crime"]);
    assert_eq!(r.manifest.release.files[0].rows, 3);
    assert_eq!(r.manifest.release.files[0].suppressed_rows, 1);
    assert_eq!(
        gw.person_releases("pnc", 1),
        (1, vec![r.release_id.clone()])
    );
    assert_eq!(gw.person_releases("pnc", 4), (1, vec![]), "suppressed");
    assert_eq!(gw.person_releases("pnc", 5), (1, vec![]), "filtered out");
}

/// A correction replaces a released record (same record key, new content). The person's data
/// was released; the registry should still name that release for the person's token.
#[test]
fn person_releases_still_finds_a_release_after_the_released_record_is_corrected() {
    let gw = Gateway::open();
    let original = Rec::new("police_crime", 1)
        .flag("da_flag", true)
        .int("victim_no", 1)
        .person("victim", &[("pnc", 1)]);
    gw.ingest_new(std::slice::from_ref(&original));
    let p = policy(&da_purposes());
    let da = gw.extract_ok(&p, "da", &["police_crime"]);
    assert_eq!(
        gw.person_releases("pnc", 1),
        (1, vec![da.release_id.clone()])
    );
    let corrected = original.int("victim_no", 2);
    assert_eq!(gw.ingest(&[corrected]), vec![Outcome::Replaced]);
    assert_eq!(
        gw.person_releases("pnc", 1),
        (1, vec![da.release_id.clone()]),
        "the person's data was in the release before the correction"
    );
}

/// A person released from two records; the record holding the cluster's smallest node is
/// withdrawn later. The other released record still carries the person's token.
#[test]
fn person_releases_still_finds_a_release_after_one_of_the_persons_records_is_withdrawn() {
    let gw = Gateway::open();
    gw.ingest_new(&[
        Rec::new("police_crime", 1)
            .flag("da_flag", true)
            .int("victim_no", 1)
            .person("victim", &[("pnc", 1)]),
        Rec::new("police_crime", 2)
            .flag("da_flag", true)
            .int("victim_no", 2)
            .person("victim", &[("pnc", 1), ("demo", 2)]),
    ]);
    let p = policy(&da_purposes());
    let da = gw.extract_ok(&p, "da", &["police_crime"]);
    let ids = ids_by(&da, "police_crime", "victim_no", "victim");
    assert_eq!(ids["1"], ids["2"], "one person, released twice");
    gw.withdraw("police_crime", &[1]);
    assert_eq!(
        gw.person_releases("demo", 2),
        (1, vec![da.release_id.clone()]),
        "record 2 was released and is still stored"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Linkers kept in step with the store

/// Log lines written while `f` runs on this thread.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buf.0.lock().expect("log buffer")).into_owned();
    (out, text)
}

const REBUILD: &str = "rebuilding a linker";

#[test]
fn linkers_follow_new_records_incrementally_and_rebuild_after_a_withdrawal() {
    let gw = Gateway::open();
    let p = policy(&[crimes_purpose("linked", &["pnc", "demo"])]);
    let victim_ids = |r: &Prepared| ids_by(r, "police_crime", "victim_no", "victim");
    // A and C: two people.
    gw.ingest_new(&[
        Rec::new("police_crime", 1)
            .int("victim_no", 1)
            .person("victim", &[("pnc", 1), ("demo", 1)]),
        Rec::new("police_crime", 3)
            .int("victim_no", 3)
            .person("victim", &[("pnc", 3), ("demo", 3)]),
    ]);
    let (first, log) = logged(|| gw.extract_ok(&p, "linked", &["police_crime"]));
    assert!(
        !log.contains(REBUILD),
        "a first build is not a rebuild:\n{log}"
    );
    let ids = victim_ids(&first);
    assert_ne!(ids["1"], ids["3"]);
    let nodes = |gw: &Gateway| {
        let keys = gw.releaser.links().keys();
        assert_eq!(keys.len(), 1, "one linker for the purpose");
        let locked = gw.releaser.links().synced(&keys[0]).expect("synced");
        locked.lock().linker.len()
    };
    assert_eq!(nodes(&gw), 2);

    // B links A (PNC) and C (demographic); D links A only.
    gw.ingest_new(&[
        Rec::new("police_crime", 2)
            .int("victim_no", 2)
            .person("victim", &[("pnc", 1), ("demo", 3)]),
        Rec::new("police_crime", 4)
            .int("victim_no", 4)
            .person("victim", &[("pnc", 1), ("demo", 4)]),
    ]);
    let (second, log) = logged(|| gw.extract_ok(&p, "linked", &["police_crime"]));
    assert!(
        !log.contains(REBUILD),
        "new records are added, not rebuilt:\n{log}"
    );
    let ids = victim_ids(&second);
    assert_eq!(ids.len(), 4);
    assert!(
        ["2", "3", "4"].iter().all(|n| ids[*n] == ids["1"]),
        "one person now: {ids:?}"
    );
    assert_eq!(
        ids["1"],
        victim_ids(&first)["1"],
        "A keeps its id: its node is the smallest"
    );
    assert_eq!(nodes(&gw), 4);

    // B withdrawn: the linker is rebuilt and C, joined only through B, is apart again.
    gw.withdraw("police_crime", &[2]);
    let (third, log) = logged(|| gw.extract_ok(&p, "linked", &["police_crime"]));
    assert!(
        log.contains(REBUILD),
        "a withdrawal rebuilds the linker:\n{log}"
    );
    let ids = victim_ids(&third);
    assert_eq!(ids.len(), 3, "B is not released");
    assert_eq!(ids["1"], ids["4"], "D still shares A's PNC token");
    assert_ne!(ids["1"], ids["3"], "C was joined to A only through B");
    assert_eq!(ids["3"], victim_ids(&first)["3"], "C has its old id back");
    assert_eq!(nodes(&gw), 3);

    // Nothing changed since: the next release neither rebuilds nor changes an id.
    let (fourth, log) = logged(|| gw.extract_ok(&p, "linked", &["police_crime"]));
    assert!(!log.contains(REBUILD), "{log}");
    assert_eq!(victim_ids(&fourth), ids);
}

/// More purpose scopes than the gateway keeps linkers for: the least recently used is dropped
/// and rebuilt on its next release, with the same person ids.
#[test]
fn linkers_beyond_the_limit_are_dropped_and_rebuilt_with_the_same_ids() {
    let gw = Gateway::open();
    gw.ingest_new(&[
        Rec::new("police_crime", 1)
            .flag("da_flag", true)
            .int("victim_no", 1)
            .person("victim", &[("pnc", 1), ("demo", 1)]),
        Rec::new("police_crime", 2)
            .flag("da_flag", true)
            .int("victim_no", 2)
            .person("victim", &[("pnc", 1), ("demo", 2)]),
    ]);
    let kinds: [&[&str]; 3] = [&["pnc"], &["demo"], &["pnc", "demo"]];
    let mut purposes = Vec::new();
    for (i, k) in kinds.iter().enumerate() {
        for is in [true, false] {
            let part = Part::deny_all("police_crime")
                .with("victim_no", "keep")
                .filter(&format!("{{ field = \"da_flag\", is = {is} }}"))
                .persons(&["victim"]);
            purposes.push(Purpose::records(&format!("p{i}-{is}"), vec![part]).linkage(k));
        }
    }
    let p = policy(&purposes);
    let first = gw.extract_ok(&p, "p0-true", &["police_crime"]);
    let ids = ids_by(&first, "police_crime", "victim_no", "victim");
    assert_eq!(ids["1"], ids["2"], "linked on pnc");
    for purpose in ["p1-true", "p1-false", "p2-true", "p2-false", "p0-false"] {
        gw.extract_ok(&p, purpose, &["police_crime"]);
    }
    assert!(gw.releaser.links().keys().len() <= super::linkset::MAX_LINKERS);
    let again = gw.extract_ok(&p, "p0-true", &["police_crime"]);
    assert_eq!(ids_by(&again, "police_crime", "victim_no", "victim"), ids);
    let demo = gw.extract_ok(&p, "p1-true", &["police_crime"]);
    let d = ids_by(&demo, "police_crime", "victim_no", "victim");
    assert_ne!(d["1"], d["2"], "not linked on demo alone");
}

// ---------------------------------------------------------------------------------------------
// 8. Differencing across tables

/// The rule of a refused table.
const DIFFERENCING: &str = super::differencing::RULE;

/// police_crime counted by victim sex or age band; min_cell 10 (so differences 1..9 are
/// refused), no filter: every stored crime is counted.
fn table_policy() -> Policy {
    let part = Part::deny_all("police_crime")
        .with("victim_sex", "keep")
        .with("victim_age", "age_band_sv");
    policy(&[Purpose::aggregate("counts", vec![part])])
}

fn crimes(keys: std::ops::Range<u32>) -> Vec<Rec> {
    keys.map(|k| {
        Rec::new("police_crime", k)
            .text("victim_sex", if k % 2 == 0 { "F" } else { "M" })
            .int("victim_age", 20 + i64::from(k % 30))
    })
    .collect()
}

fn by(field: &str) -> Vec<String> {
    vec![field.to_owned()]
}

fn table(gw: &Gateway, p: &Policy, field: &str) -> Prepared {
    gw.aggregate(p, "counts", "police_crime", &by(field))
        .unwrap_or_else(|e| panic!("table by {field}: {e}"))
}

/// `result` is a `disclosure.differencing` refusal that names no release to the analyst (only
/// the earlier table's release time), audited as a deny entry with the rule whose reason names
/// `earlier` and its audit entry, and nothing was spooled, registered or released.
fn assert_differencing_refused(
    gw: &Gateway,
    files_before: &BTreeSet<String>,
    result: Result<Prepared, ReleaseError>,
    earlier: &Prepared,
) {
    let registered = gw.releaser.registry().list().expect("list").len();
    let releases = |gw: &Gateway| {
        gw.entries()
            .iter()
            .filter(|e| e.action == Action::Release)
            .count()
    };
    let released_before = releases(gw);
    match result {
        Err(ReleaseError::Denied {
            rule,
            message,
            audit_entry: Some(n),
        }) => {
            assert_eq!(rule, DIFFERENCING, "{message}");
            assert!(
                message.contains(&format!(
                    "an earlier table of police_crime (released {})",
                    earlier.manifest.release.created
                )),
                "{message}"
            );
            assert!(
                !message.contains(&earlier.release_id)
                    && !message.contains("release ")
                    && !message.contains("audit entry"),
                "the analyst is not told which release: {message}"
            );
            assert!(message.contains("fewer than 10"), "{message}");
            assert!(message.contains("at least 10 records differ"), "{message}");
            let entry = gw
                .entries()
                .into_iter()
                .find(|e| e.seq == n)
                .expect("the refusal's entry");
            assert_eq!(entry.action, Action::Deny);
            assert_eq!(entry.decision, crate::audit::entry::Decision::Deny);
            assert_eq!(entry.release, None);
            assert_eq!(entry.datasets, ["police_crime"]);
            let reason = entry.reason.expect("a reason");
            assert!(reason.starts_with(&format!("{DIFFERENCING}: ")), "{reason}");
            assert!(
                reason.contains(&format!(
                    "the earlier table is release {} (audit entry {}",
                    earlier.release_id, earlier.audit_entry
                )),
                "the auditors are told which release: {reason}"
            );
            assert_eq!(n + 1, gw.audit.size(), "the refusal is the last entry");
        }
        Err(e) => panic!("expected a {DIFFERENCING} refusal, got {e:?}"),
        Ok(r) => panic!(
            "released {} although it differs from {} by fewer than min_cell records",
            r.release_id, earlier.release_id
        ),
    }
    assert_eq!(&gw.release_files(), files_before, "nothing spooled or kept");
    assert_eq!(
        gw.releaser.registry().list().expect("list").len(),
        registered
    );
    assert_eq!(releases(gw), released_before);
}

#[test]
fn a_table_one_record_apart_from_an_earlier_one_is_refused_and_audited() {
    let gw = Gateway::open();
    let p = table_policy();
    gw.ingest_new(&crimes(1..21));
    let first = table(&gw, &p, "victim_sex");
    gw.ingest_new(&crimes(21..22));
    let files = gw.release_files();
    let again = gw.aggregate(&p, "counts", "police_crime", &by("victim_sex"));
    assert_differencing_refused(&gw, &files, again, &first);
    // Another table of the same records (other fields) is refused too: its total is the same.
    let files = gw.release_files();
    let other = gw.aggregate(&p, "counts", "police_crime", &by("victim_age"));
    assert_differencing_refused(&gw, &files, other, &first);
    assert_eq!(gw.releaser.registry().list().expect("list").len(), 1);
}

#[test]
fn a_table_min_cell_records_apart_is_released_and_one_fewer_is_not() {
    let gw = Gateway::open();
    let p = table_policy();
    gw.ingest_new(&crimes(1..21));
    let first = table(&gw, &p, "victim_sex");
    gw.ingest_new(&crimes(21..30));
    let files = gw.release_files();
    let nine = gw.aggregate(&p, "counts", "police_crime", &by("victim_sex"));
    assert_differencing_refused(&gw, &files, nine, &first);
    gw.ingest_new(&crimes(30..31));
    let ten = table(&gw, &p, "victim_sex");
    let (_, rows) = release_csv(&ten, "police_crime_by_victim_sex.csv");
    assert_eq!(rows.last().expect("a total row"), &["total", "30"]);
    let entry = gw
        .entries()
        .into_iter()
        .find(|e| e.seq == ten.audit_entry)
        .expect("the release's entry");
    assert_eq!(entry.reason, None, "the same fields: nothing to flag");
    assert_eq!(gw.releaser.registry().list().expect("list").len(), 2);
}

#[test]
fn the_same_table_asked_again_with_nothing_changed_is_released() {
    let gw = Gateway::open();
    let p = table_policy();
    gw.ingest_new(&crimes(1..21));
    let first = table(&gw, &p, "victim_sex");
    let second = table(&gw, &p, "victim_sex");
    let third = table(&gw, &p, "victim_sex");
    assert_ne!(first.release_id, second.release_id);
    for t in [&second, &third] {
        assert_eq!(t.manifest.release.shares_population_with_earlier_tables, 0);
        let entry = gw
            .entries()
            .into_iter()
            .find(|e| e.seq == t.audit_entry)
            .expect("the release's entry");
        assert_eq!(entry.reason, None);
    }
    // One population file for the three tables.
    let populations = gw
        .release_files()
        .into_iter()
        .filter(|n| n.starts_with("population-"))
        .count();
    assert_eq!(populations, 1);
}

#[test]
fn a_table_of_the_same_records_by_other_fields_is_released_and_counts_the_earlier_ones() {
    let gw = Gateway::open();
    let p = table_policy();
    gw.ingest_new(&crimes(1..21));
    let by_sex = table(&gw, &p, "victim_sex");
    let by_age = table(&gw, &p, "victim_age");
    let shared = |t: &Prepared| t.manifest.release.shares_population_with_earlier_tables;
    assert_eq!(shared(&by_sex), 0);
    assert_eq!(shared(&by_age), 1);
    let entry = gw
        .entries()
        .into_iter()
        .find(|e| e.seq == by_age.audit_entry)
        .expect("the release's entry");
    assert_eq!(entry.action, Action::Release);
    let reason = entry.reason.expect("the release is flagged");
    assert!(
        reason.starts_with("disclosure.linked-tables: ")
            && reason.contains("the records of 1 earlier table(s) of police_crime"),
        "{reason}"
    );
    // The entry goes to the analyst in the manifest: it names no other release.
    let sent = serde_json::to_string(&by_age.manifest).expect("manifest");
    assert!(
        !sent.contains(&by_sex.release_id),
        "the manifest names the earlier release: {sent}"
    );
    // The manifest with its note still verifies against the signed log.
    let key = skp_core::checkpoint::VerifierKey::parse(&gw.audit.verifier_key()).expect("key");
    super::manifest::verify_release(&by_age.dir, &key, gw.audit.origin())
        .unwrap_or_else(|e| panic!("verify-release: {e}"));
    // Counted by sex again: the by-age table is counted, the first by-sex one is not (same
    // fields).
    let again = table(&gw, &p, "victim_sex");
    assert_eq!(shared(&again), 1);
    // By age again: both by-sex tables.
    let age_again = table(&gw, &p, "victim_age");
    assert_eq!(shared(&age_again), 2);
}

#[test]
fn a_withdrawn_or_corrected_record_is_a_difference() {
    let gw = Gateway::open();
    let p = table_policy();
    let records = crimes(1..21);
    gw.ingest_new(&records);
    let first = table(&gw, &p, "victim_sex");
    // A correction: the same record key, another sex. Comparing the tables would show the
    // record moving from one cell to another, so it is one version out and one in (2 < 10).
    let corrected = records[2].clone().text("victim_sex", "Unknown");
    assert_eq!(gw.ingest(&[corrected]), vec![Outcome::Replaced]);
    let files = gw.release_files();
    let after_correction = gw.aggregate(&p, "counts", "police_crime", &by("victim_sex"));
    assert_differencing_refused(&gw, &files, after_correction, &first);
    // The same record sent again unchanged is a duplicate: no difference.
    assert_eq!(gw.ingest(&records[3..4]), vec![Outcome::Duplicate]);
    // A withdrawal on top: one record fewer (and the correction): refused too.
    gw.withdraw("police_crime", &[5]);
    let files = gw.release_files();
    let after_withdrawal = gw.aggregate(&p, "counts", "police_crime", &by("victim_sex"));
    assert_differencing_refused(&gw, &files, after_withdrawal, &first);
}

#[test]
fn a_corrected_record_counted_once_more_is_released_once_min_cell_versions_differ() {
    // min_cell 3: one correction (2 versions) is refused, two corrections (4) are released, and
    // the released table shows the corrected value.
    let gw = Gateway::open();
    let mut purpose = Purpose::aggregate(
        "counts",
        vec![Part::deny_all("police_crime").with("victim_sex", "keep")],
    );
    purpose.min_cell = 3;
    let p = policy(&[purpose]);
    let records = crimes(1..21);
    gw.ingest_new(&records);
    let first = table(&gw, &p, "victim_sex");
    assert_eq!(
        gw.ingest(&[records[2].clone().text("victim_sex", "Unknown")]),
        vec![Outcome::Replaced]
    );
    let refused = gw.aggregate(&p, "counts", "police_crime", &by("victim_sex"));
    assert!(
        matches!(&refused, Err(ReleaseError::Denied { rule, .. }) if *rule == DIFFERENCING),
        "{refused:?}"
    );
    assert_eq!(
        gw.ingest(&[records[4].clone().text("victim_sex", "Unknown")]),
        vec![Outcome::Replaced]
    );
    let second = table(&gw, &p, "victim_sex");
    assert_ne!(first.release_id, second.release_id);
    let (_, rows) = release_csv(&second, "police_crime_by_victim_sex.csv");
    assert!(
        rows.iter().any(|r| r[0] == "Unknown"),
        "the corrections are counted: {rows:?}"
    );
}

#[test]
fn a_table_of_another_purpose_one_record_apart_is_refused() {
    // Two purposes over police_crime: "counts" counts every crime, "adults-under-40" those with
    // a victim aged up to 39, one record fewer (ages are 21..=40). An analyst allowed both must
    // not get the one record by subtraction.
    let gw = Gateway::open();
    let all = Purpose::aggregate(
        "counts",
        vec![Part::deny_all("police_crime").with("victim_sex", "keep")],
    );
    let under_40 = Purpose::aggregate(
        "adults-under-40",
        vec![
            Part::deny_all("police_crime")
                .with("victim_sex", "keep")
                .filter("{ field = \"victim_age\", max = 39 }"),
        ],
    );
    let p = policy(&[all, under_40]);
    gw.ingest_new(&crimes(1..21));
    let first = table(&gw, &p, "victim_sex");
    let files = gw.release_files();
    let other = gw.aggregate(&p, "adults-under-40", "police_crime", &by("victim_sex"));
    assert_differencing_refused(&gw, &files, other, &first);
    // Ten records apart (ages 31..=40 left out): released.
    let mut under_31 = Purpose::aggregate(
        "adults-under-31",
        vec![
            Part::deny_all("police_crime")
                .with("victim_sex", "keep")
                .filter("{ field = \"victim_age\", max = 30 }"),
        ],
    );
    under_31.min_cell = 10;
    let p = policy(&[
        Purpose::aggregate(
            "counts",
            vec![Part::deny_all("police_crime").with("victim_sex", "keep")],
        ),
        under_31,
    ]);
    gw.aggregate(&p, "adults-under-31", "police_crime", &by("victim_sex"))
        .unwrap_or_else(|e| panic!("ten records apart: {e}"));
}

#[test]
fn an_undelivered_table_is_not_an_earlier_table() {
    let gw = Gateway::open();
    let p = table_policy();
    gw.ingest_new(&crimes(1..21));
    let delivered = table(&gw, &p, "victim_sex");
    gw.ingest_new(&crimes(21..31));
    // Ten more records: released, then never delivered (its call ended before it was sent).
    let undelivered = table(&gw, &p, "victim_sex");
    gw.releaser
        .forget_undelivered_table(&undelivered.release_id)
        .expect("forget");
    assert!(
        !gw.release_files()
            .iter()
            .any(|n| n.starts_with(&undelivered.release_id) && n.ends_with(".units")),
        "its unit list is removed"
    );
    assert!(
        gw.releaser
            .registry()
            .list()
            .expect("list")
            .iter()
            .any(|r| r.header.release_id == undelivered.release_id),
        "it stays registered"
    );
    // One more record: one apart from the undelivered table (nobody saw it), eleven from the
    // delivered one: released.
    gw.ingest_new(&crimes(31..32));
    let _next = table(&gw, &p, "victim_sex");
    // The delivered table is still compared: a table one record from it is still refused.
    gw.withdraw("police_crime", &(21..32).collect::<Vec<_>>());
    gw.ingest_new(&crimes(40..41));
    let files = gw.release_files();
    let near_delivered = gw.aggregate(&p, "counts", "police_crime", &by("victim_sex"));
    assert_differencing_refused(&gw, &files, near_delivered, &delivered);
}

#[test]
fn table_unit_lists_survive_a_restart_and_the_refusal_still_happens() {
    let gw = Gateway::open();
    let p = table_policy();
    gw.ingest_new(&crimes(1..21));
    let first = table(&gw, &p, "victim_sex");
    // A unit list of a release never committed (the gateway stopped before its entry).
    let stray = super::registry::TableUnits {
        release_id: "ff".repeat(16),
        agreement: AGREEMENT.into(),
        purpose: "counts".into(),
        dataset: "police_crime".into(),
        released: "2026-01-15T12:00:00.000Z".into(),
        min_cell: 10,
        by: vec!["victim_sex:keep".into()],
        units: 1,
        population: super::differencing::Units::new(vec![1]).digest(),
    };
    gw.releaser
        .registry()
        .write_table_units(&stray, &super::differencing::Units::new(vec![1]))
        .expect("write a stray unit list");
    let files_before_restart = gw.release_files();
    let has_units = |files: &BTreeSet<String>, id: &str| {
        files
            .iter()
            .any(|n| n.starts_with(&format!("{id}.")) && n.ends_with(".units"))
    };
    assert!(has_units(&files_before_restart, &stray.release_id));

    // Restart: a new releaser over the same data directory.
    let restarted = Releaser::new(
        gw.store.clone(),
        gw.audit.clone(),
        catalog().clone(),
        ReleaseKey::from_bytes(&[0x42; 32]),
        gw.dir.path(),
    )
    .expect("releaser after the restart");
    let files = gw.release_files();
    assert!(
        !has_units(&files, &stray.release_id)
            && !files
                .iter()
                .any(|n| n.ends_with(&format!("-{}.fp", stray.population))),
        "the uncommitted unit list and its population are removed: {files:?}"
    );
    assert!(has_units(&files, &first.release_id));

    gw.ingest_new(&crimes(21..22));
    let req = AggregateRequest {
        agreement: AGREEMENT.into(),
        purpose: "counts".into(),
        dataset: "police_crime".into(),
        by: by("victim_sex"),
    };
    let result = restarted.aggregate(&p, &analyst(), &actor(), &req, NOW);
    assert_differencing_refused(&gw, &files, result, &first);
}

#[test]
fn another_analyst_is_refused_a_table_one_record_apart_too() {
    let gw = Gateway::open();
    let p = table_policy();
    gw.ingest_new(&crimes(1..21));
    let first = table(&gw, &p, "victim_sex");
    gw.ingest_new(&crimes(21..22));
    let other = Requester {
        sub: "b.analyst".into(),
        agency: Some("rbk-council".into()),
        roles: vec!["analyst".into()],
    };
    let other_actor = Actor {
        kind: "analyst".into(),
        id: "b.analyst".into(),
        agency: Some("rbk-council".into()),
    };
    let req = AggregateRequest {
        agreement: AGREEMENT.into(),
        purpose: "counts".into(),
        dataset: "police_crime".into(),
        by: by("victim_sex"),
    };
    let files = gw.release_files();
    let result = gw.releaser.aggregate(&p, &other, &other_actor, &req, NOW);
    assert_differencing_refused(&gw, &files, result, &first);
    let entry = gw.entries().pop().expect("the refusal");
    assert_eq!(entry.actor.id, "b.analyst");
}
