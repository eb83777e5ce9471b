//! The ISA file format (`policies/agreements/*.toml`) and its closed-world validation.
//!
//! One file is one Information Sharing Agreement: who the parties are, the legal bases, dates,
//! and per purpose the recipients, the output kind, the linkage allowed, the disclosure control
//! settings and, per dataset, a row filter and a disposition for **every** field of the dataset
//! (`keep`, `deny` or a generalisation by name). Anything the file does not say is denied;
//! anything it says that the gateway does not understand refuses the load, with `file:line`
//! and the fix.
//!
//! Validity instants carry their offset (`2027-03-31T23:59:59+01:00`): the agreement states its
//! own time zone, and the gateway compares instants, never wall-clock strings.

use serde::Deserialize;
use skp_core::catalog::{Catalog, Dataset, FieldClass};
use skp_core::toml_file::line_of;
use skp_core::transform::Transform;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use time::OffsetDateTime;
use toml::Spanned;

/// Datasets held by a health or social care authority: under PCSC 2022 s.16 they may only be
/// released anonymous or aggregate (domain research, part C, "health caveat").
pub const HEALTH_OR_SOCIAL_CARE: &[&str] =
    &["ed_istv", "icb_ed_assault_mh_linked", "council_csc_flags"];

/// The legal gateway whose use triggers the health caveat.
pub const PCSC_S16: &str = "PCSC 2022 s.16";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    agreement: RawAgreement,
    #[serde(default)]
    purpose: Vec<RawPurpose>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgreement {
    id: Spanned<String>,
    title: String,
    version: String,
    parties: Spanned<Vec<String>>,
    legal_basis: RawLegalBasis,
    dpia: String,
    valid_from: Spanned<toml::value::Datetime>,
    valid_until: Spanned<toml::value::Datetime>,
    review_by: Spanned<toml::value::Datetime>,
    retention: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLegalBasis {
    gateways: Vec<String>,
    article6: String,
    #[serde(default)]
    article9: Option<String>,
    #[serde(default)]
    article10: Option<String>,
    #[serde(default)]
    part3: Option<String>,
    /// A basis for health or social care data beyond PCSC s.16 (e.g. a Caldicott-approved DHR
    /// panel), which lifts the health caveat for this agreement.
    #[serde(default)]
    health: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPurpose {
    id: Spanned<String>,
    description: String,
    recipients: Spanned<Vec<RawRecipient>>,
    output: Spanned<String>,
    linkage: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    fuzzy: Option<Spanned<RawFuzzy>>,
    #[serde(default)]
    disclosure: RawDisclosure,
    datasets: Spanned<BTreeMap<String, RawDatasetRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFuzzy {
    threshold: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipient {
    agency: String,
    role: String,
    #[serde(default)]
    subjects: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisclosure {
    min_cell: Option<u64>,
    health_rule: Option<bool>,
    k: Option<u64>,
    #[serde(default)]
    quasi_identifiers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatasetRule {
    #[serde(default)]
    filter: Vec<Spanned<RawCondition>>,
    persons: Option<Spanned<Vec<String>>>,
    fields: Spanned<BTreeMap<String, Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    field: String,
    #[serde(rename = "in")]
    in_: Option<Vec<String>>,
    min: Option<i64>,
    max: Option<i64>,
    is: Option<bool>,
    #[serde(default)]
    or: Vec<RawCondition>,
}

/// A validated agreement.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// Agreement id, e.g. `SKP-ISA-SV-01`.
    pub id: String,
    /// Title.
    pub title: String,
    /// Version of the agreement text.
    pub version: String,
    /// Party agencies.
    pub parties: Vec<String>,
    /// Legal gateways (e.g. `CDA 1998 s.115`, `PCSC 2022 s.16`).
    pub gateways: Vec<String>,
    /// UK GDPR Article 6 basis.
    pub article6: String,
    /// Article 9 condition, if special category data is shared.
    pub article9: Option<String>,
    /// Article 10 condition, if criminal offence data is shared.
    pub article10: Option<String>,
    /// DPA 2018 Part 3 / Sch.8 basis of law-enforcement disclosers.
    pub part3: Option<String>,
    /// A health or social care basis beyond PCSC s.16, if any.
    pub health_basis: Option<String>,
    /// DPIA reference.
    pub dpia: String,
    /// First instant of validity.
    pub valid_from: OffsetDateTime,
    /// Last instant of validity (inclusive).
    pub valid_until: OffsetDateTime,
    /// Review due.
    pub review_by: OffsetDateTime,
    /// Retention and disposal.
    pub retention: String,
    /// Purposes.
    pub purposes: Vec<Purpose>,
    /// The file it came from.
    pub file: String,
    /// SHA-256 (hex) of the file's bytes.
    pub sha256: String,
}

/// What a purpose releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Person- or event-level records.
    Records,
    /// Counts only.
    Aggregate,
}

impl Output {
    /// The file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Output::Records => "records",
            Output::Aggregate => "aggregate",
        }
    }
}

/// Who may receive a purpose's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The recipient's agency.
    pub agency: String,
    /// The role required (`analyst`).
    pub role: String,
    /// Named subjects; empty = anyone of that agency with that role.
    pub subjects: Vec<String>,
}

/// Disclosure control settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disclosure {
    /// Aggregate cells 1..min_cell-1 are suppressed.
    pub min_cell: u64,
    /// NHS rule for health-derived cells (1-7 suppressed, others rounded to 5).
    pub health_rule: bool,
    /// k of k-anonymity for record extracts.
    pub k: u64,
    /// Quasi-identifier fields for k-anonymity.
    pub quasi_identifiers: Vec<String>,
}

/// A validated purpose.
#[derive(Debug, Clone)]
pub struct Purpose {
    /// Purpose id.
    pub id: String,
    /// What it is for.
    pub description: String,
    /// Who may receive it.
    pub recipients: Vec<Recipient>,
    /// Output kind.
    pub output: Output,
    /// Token kinds linkage may use (empty: no linkage).
    pub linkage: Vec<String>,
    /// Fuzzy demographic linkage (`[purpose.fuzzy]`): names, date of birth and sex compared
    /// through the agents' fuzzy tokens, beside the exact kinds; `None`: exact tokens only.
    pub fuzzy: Option<FuzzyLinkage>,
    /// Disclosure control.
    pub disclosure: Disclosure,
    /// Per dataset rules, by dataset name.
    pub datasets: BTreeMap<String, DatasetRule>,
}

/// A purpose's fuzzy linkage settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FuzzyLinkage {
    /// Pairs of person roles scoring at least this match weight (log2 of the Fellegi–Sunter
    /// likelihood ratio) are linked.
    pub threshold: f64,
}

/// The match weight fuzzy linkage uses when an agreement does not set one: the matcher's
/// measured default (`skp_core::fuzzy::link::MatchSettings::default().threshold`; a test
/// keeps the two equal).
pub const DEFAULT_FUZZY_THRESHOLD: f64 = 4.0;

/// The range of thresholds an agreement may set.
pub const FUZZY_THRESHOLD_RANGE: std::ops::RangeInclusive<f64> = 0.0..=60.0;

/// What happens to one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Released as stored.
    Keep,
    /// Released generalised.
    Generalise(Transform),
    /// Never released.
    Deny,
}

impl Disposition {
    /// The file spelling.
    pub fn name(&self) -> &'static str {
        match self {
            Disposition::Keep => "keep",
            Disposition::Deny => "deny",
            Disposition::Generalise(t) => t.name(),
        }
    }
}

/// A row condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The field's value is one of these.
    In(String, Vec<String>),
    /// The field is a whole number within the bounds.
    Range(String, Option<i64>, Option<i64>),
    /// The field is this boolean.
    Is(String, bool),
    /// Any of these holds.
    Or(Vec<Condition>),
}

/// The rules of one dataset within a purpose.
#[derive(Debug, Clone)]
pub struct DatasetRule {
    /// Conditions every released row meets (all of them).
    pub filter: Vec<Condition>,
    /// Person roles whose re-keyed person ids are released.
    pub persons: Vec<String>,
    /// Disposition of every field of the dataset.
    pub fields: BTreeMap<String, Disposition>,
}

/// One problem found while loading an agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, message: String) {
        self.problems.push(Problem {
            file: self.file.to_owned(),
            line: line_of(self.text, span.start),
            message,
        });
    }
}

/// Converts a TOML datetime with an offset to an instant; a date alone or a local time is refused.
pub(crate) fn instant(dt: &toml::value::Datetime) -> Result<OffsetDateTime, String> {
    let (Some(d), Some(t), Some(off)) = (dt.date, dt.time, dt.offset) else {
        return Err(format!(
            "{dt} has no time zone offset: write the instant with its offset, e.g. 2027-03-31T23:59:59+01:00 (BST) or 2027-03-31T23:59:59Z (UTC)"
        ));
    };
    let date = time::Date::from_calendar_date(
        i32::from(d.year),
        time::Month::try_from(d.month).map_err(|e| e.to_string())?,
        d.day,
    )
    .map_err(|e| e.to_string())?;
    let tm = time::Time::from_hms_nano(
        t.hour,
        t.minute,
        t.second.unwrap_or(0),
        t.nanosecond.unwrap_or(0),
    )
    .map_err(|e| e.to_string())?;
    let minutes = match off {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => minutes,
    };
    let offset =
        time::UtcOffset::from_whole_seconds(i32::from(minutes) * 60).map_err(|e| e.to_string())?;
    Ok(time::PrimitiveDateTime::new(date, tm).assume_offset(offset))
}

/// Parses and validates one agreement file against the catalog. `now` decides "already expired".
pub fn load(
    path: &Path,
    text: &str,
    catalog: &Catalog,
    now: OffsetDateTime,
) -> Result<Agreement, Vec<Problem>> {
    let file = path.display().to_string();
    let raw: RawFile = skp_core::toml_file::parse(text, path).map_err(|e| {
        vec![Problem {
            file: e.file,
            line: e.line,
            message: e.message,
        }]
    })?;
    let mut cx = Ctx {
        file: &file,
        text,
        problems: Vec::new(),
    };
    let a = raw.agreement;
    check_id(&mut cx, &a.id, "agreement id");
    for p in a.parties.get_ref() {
        if !skp_core::ids::KINGSTON_AGENCIES.contains(&p.as_str()) {
            let s = skp_core::catalog::suggest(p, &skp_core::ids::KINGSTON_AGENCIES);
            cx.err(
                a.parties.span(),
                format!("party {p:?} is not an agency of the partnership{s}"),
            );
        }
    }
    let when =
        |v: &Spanned<toml::value::Datetime>, what: &str, cx: &mut Ctx| match instant(v.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                cx.err(v.span(), format!("{what}: {e}"));
                None
            }
        };
    let valid_from = when(&a.valid_from, "valid_from", &mut cx);
    let valid_until = when(&a.valid_until, "valid_until", &mut cx);
    let review_by = when(&a.review_by, "review_by", &mut cx);
    if let (Some(f), Some(u)) = (valid_from, valid_until) {
        if u <= f {
            cx.err(
                a.valid_until.span(),
                "valid_until must be after valid_from".into(),
            );
        }
        if u < now {
            cx.err(
                a.valid_until.span(),
                format!("the agreement expired at {u}: renew it (new valid_until and version) or remove the file"),
            );
        }
    }
    let health_basis = a.legal_basis.health.clone();
    if a.legal_basis.gateways.is_empty() {
        cx.err(
            a.id.span(),
            "legal_basis.gateways is empty: name the legal gateway(s), e.g. \"CDA 1998 s.115\""
                .into(),
        );
    }
    let mut purposes = Vec::new();
    let mut seen = Vec::new();
    for p in raw.purpose {
        if seen.contains(p.id.get_ref()) {
            cx.err(
                p.id.span(),
                format!(
                    "purpose {:?} is defined twice: rename one of them or merge their datasets into one",
                    p.id.get_ref()
                ),
            );
        }
        seen.push(p.id.get_ref().clone());
        // Health and social care data is anonymous/aggregate only unless the agreement records a
        // separate health basis (PCSC s.16 does not cover it; neither does CDA s.115 alone).
        if let Some(purpose) = purpose(
            &mut cx,
            p,
            a.parties.get_ref(),
            catalog,
            health_basis.is_none(),
        ) {
            purposes.push(purpose);
        }
    }
    if purposes.is_empty() && cx.problems.is_empty() {
        cx.err(a.id.span(), "the agreement has no [[purpose]]".into());
    }
    if !cx.problems.is_empty() {
        return Err(cx.problems);
    }
    let (Some(valid_from), Some(valid_until), Some(review_by)) =
        (valid_from, valid_until, review_by)
    else {
        return Err(cx.problems);
    };
    Ok(Agreement {
        id: a.id.into_inner(),
        title: a.title,
        version: a.version,
        parties: a.parties.into_inner(),
        gateways: a.legal_basis.gateways,
        article6: a.legal_basis.article6,
        article9: a.legal_basis.article9,
        article10: a.legal_basis.article10,
        part3: a.legal_basis.part3,
        health_basis,
        dpia: a.dpia,
        valid_from,
        valid_until,
        review_by,
        retention: a.retention,
        purposes,
        file,
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())),
    })
}

/// Ids are lowercase ASCII slugs or uppercase agreement ids: letters, digits, `-`, `_`, `.`
/// only (no look-alike Unicode).
fn check_id(cx: &mut Ctx, id: &Spanned<String>, what: &str) {
    let s = id.get_ref();
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        cx.err(
            id.span(),
            format!("{what} {s:?} must be 1-64 ASCII letters, digits, '-', '_' or '.'"),
        );
    }
}

fn purpose(
    cx: &mut Ctx,
    p: RawPurpose,
    parties: &[String],
    catalog: &Catalog,
    health_caveat: bool,
) -> Option<Purpose> {
    let before = cx.problems.len();
    check_id(cx, &p.id, "purpose id");
    let pid = p.id.get_ref().clone();
    let output = match p.output.get_ref().as_str() {
        "records" => Output::Records,
        "aggregate" => Output::Aggregate,
        other => {
            cx.err(
                p.output.span(),
                format!("output {other:?} is not known: write \"records\" or \"aggregate\""),
            );
            Output::Aggregate
        }
    };
    if p.recipients.get_ref().is_empty() {
        cx.err(
            p.recipients.span(),
            format!("purpose {pid}: no recipients; name at least one {{ agency, role }}"),
        );
    }
    let mut recipients = Vec::new();
    for r in p.recipients.get_ref() {
        if !skp_core::ids::KINGSTON_AGENCIES.contains(&r.agency.as_str()) {
            let s = skp_core::catalog::suggest(&r.agency, &skp_core::ids::KINGSTON_AGENCIES);
            cx.err(
                p.recipients.span(),
                format!(
                    "recipient agency {:?} is not an agency of the partnership{s}",
                    r.agency
                ),
            );
        }
        if !matches!(r.role.as_str(), "analyst" | "auditor" | "admin") {
            cx.err(
                p.recipients.span(),
                format!(
                    "recipient role {:?} is not known: write \"analyst\"",
                    r.role
                ),
            );
        }
        recipients.push(Recipient {
            agency: r.agency.clone(),
            role: r.role.clone(),
            subjects: r.subjects.clone(),
        });
    }
    const KINDS: &[&str] = &["nhs", "pnc", "demo", "uprn", "ref"];
    let (linkage, linkage_span) = match p.linkage {
        Some(l) => {
            let span = l.span();
            (l.into_inner(), span)
        }
        None => (Vec::new(), p.id.span()),
    };
    for k in &linkage {
        if !KINDS.contains(&k.as_str()) {
            let s = skp_core::catalog::suggest(k, KINDS);
            cx.err(
                linkage_span.clone(),
                format!(
                    "linkage token kind {k:?} is not known{s}; known: {}",
                    KINDS.join(", ")
                ),
            );
        }
    }
    let fuzzy = p.fuzzy.map(|f| {
        let span = f.span();
        let threshold = f.into_inner().threshold.unwrap_or(DEFAULT_FUZZY_THRESHOLD);
        if !linkage.iter().any(|k| k == "demo") {
            cx.err(
                span.clone(),
                format!("purpose {pid}: fuzzy linkage compares names, date of birth and sex; add \"demo\" to `linkage` or remove [purpose.fuzzy]"),
            );
        }
        if !threshold.is_finite() || !FUZZY_THRESHOLD_RANGE.contains(&threshold) {
            cx.err(
                span,
                format!(
                    "purpose {pid}: fuzzy.threshold must be a match weight from {} to {} (default {DEFAULT_FUZZY_THRESHOLD}; higher links fewer pairs)",
                    FUZZY_THRESHOLD_RANGE.start(),
                    FUZZY_THRESHOLD_RANGE.end()
                ),
            );
        }
        FuzzyLinkage { threshold }
    });
    let d = p.disclosure;
    let disclosure = Disclosure {
        min_cell: d.min_cell.unwrap_or(10),
        health_rule: d.health_rule.unwrap_or(false),
        k: d.k.unwrap_or(5),
        quasi_identifiers: d.quasi_identifiers,
    };
    if disclosure.min_cell == 0 || disclosure.k == 0 {
        cx.err(
            p.id.span(),
            format!("purpose {pid}: disclosure.min_cell and disclosure.k must be at least 1"),
        );
    }
    let mut datasets = BTreeMap::new();
    if p.datasets.get_ref().is_empty() {
        cx.err(p.datasets.span(), format!("purpose {pid}: no datasets"));
    }
    for (name, rule) in p.datasets.into_inner() {
        // The dataset's own `[purpose.datasets.NAME.fields]` table locates its errors.
        let span = rule.fields.span();
        let Some(ds) = catalog.dataset(&name) else {
            let known: Vec<&str> = catalog.datasets().map(|d| d.name.as_str()).collect();
            let s = skp_core::catalog::suggest(&name, &known);
            cx.err(
                span.clone(),
                format!("purpose {pid}: dataset {name:?} is not in the catalog{s}"),
            );
            continue;
        };
        if !parties.iter().any(|p| p == ds.owner.as_str()) {
            cx.err(
                span.clone(),
                format!("purpose {pid}: dataset {name} is owned by {}, which is not a party to the agreement; add it to parties or remove the dataset", ds.owner),
            );
        }
        if health_caveat && HEALTH_OR_SOCIAL_CARE.contains(&name.as_str()) {
            if output != Output::Aggregate {
                cx.err(
                    p.output.span(),
                    format!("purpose {pid}: dataset {name} is health or social care data, which may be shared only anonymous or aggregate ({PCSC_S16} does not cover patient or social care information): set output = \"aggregate\", or record a separate health basis in legal_basis.health"),
                );
            }
            if let Some(persons) = rule.persons.as_ref().filter(|p| !p.get_ref().is_empty()) {
                cx.err(
                    persons.span(),
                    format!("purpose {pid}: dataset {name} is health or social care data: person ids need a separate health basis in legal_basis.health"),
                );
            }
        }
        if let Some(r) = dataset_rule(cx, &pid, ds, rule, output, &linkage) {
            datasets.insert(name, r);
        }
    }
    let all_valid = cx.problems.len() == before;
    for q in disclosure.quasi_identifiers.iter().filter(|_| all_valid) {
        if !datasets
            .values()
            .any(|r| r.fields.get(q).is_some_and(|d| *d != Disposition::Deny))
        {
            cx.err(p.id.span(), format!("purpose {pid}: quasi-identifier {q:?} is not a released field of any dataset of the purpose"));
        }
    }
    (cx.problems.len() == before).then_some(Purpose {
        id: pid,
        description: p.description,
        recipients,
        output,
        linkage,
        fuzzy,
        disclosure,
        datasets,
    })
}

fn dataset_rule(
    cx: &mut Ctx,
    pid: &str,
    ds: &Dataset,
    rule: RawDatasetRule,
    output: Output,
    linkage: &[String],
) -> Option<DatasetRule> {
    let before = cx.problems.len();
    let name = ds.name.as_str();
    let table_span = rule.fields.span();
    let given = rule.fields.into_inner();
    let mut fields = BTreeMap::new();
    for (fname, disp) in &given {
        let Some(f) = ds.field(fname) else {
            let known: Vec<&str> = ds.fields.iter().map(|f| f.name.as_str()).collect();
            let s = skp_core::catalog::suggest(fname, &known);
            cx.err(
                disp.span(),
                format!("purpose {pid}: dataset {name} has no field {fname:?}{s}"),
            );
            continue;
        };
        let d = match disp.get_ref().as_str() {
            "keep" => Disposition::Keep,
            "deny" => Disposition::Deny,
            t => match Transform::parse(t) {
                Ok(tr) => {
                    if !tr.applies_to_field(f) {
                        cx.err(
                            disp.span(),
                            format!(
                                "purpose {pid}: {name}.{fname} is of type {}, which {t:?} does not apply to; {}",
                                f.ty.as_str(),
                                fitting_fix(f)
                            ),
                        );
                    }
                    Disposition::Generalise(tr)
                }
                Err(e) => {
                    cx.err(
                        disp.span(),
                        format!(
                            "purpose {pid}: {name}.{fname}: {e}; or write \"keep\" or \"deny\""
                        ),
                    );
                    continue;
                }
            },
        };
        if f.class == FieldClass::Direct && d != Disposition::Deny {
            cx.err(
                disp.span(),
                format!("purpose {pid}: {name}.{fname} is a direct identifier, which never leaves the agency: write \"deny\""),
            );
        }
        fields.insert(fname.clone(), d);
    }
    let missing: Vec<&str> = ds
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .filter(|f| !given.contains_key(*f))
        .collect();
    if !missing.is_empty() {
        cx.err(
            table_span.clone(),
            format!(
                "purpose {pid}: dataset {name}: every field needs a disposition (keep, deny or a generalisation); missing: {}",
                missing.join(", ")
            ),
        );
    }
    let (persons, persons_span) = match &rule.persons {
        Some(p) => (p.get_ref().clone(), p.span()),
        None => (Vec::new(), table_span.clone()),
    };
    for r in &persons {
        if !ds.roles.iter().any(|x| x.name == *r) {
            let known: Vec<&str> = ds.roles.iter().map(|x| x.name.as_str()).collect();
            let s = skp_core::catalog::suggest(r, &known);
            cx.err(
                persons_span.clone(),
                format!("purpose {pid}: dataset {name} has no person role {r:?}{s}"),
            );
        }
    }
    if !persons.is_empty() && (output != Output::Records || linkage.is_empty()) {
        cx.err(
            persons_span,
            format!("purpose {pid}: person ids are released only with output = \"records\" and a non-empty linkage list"),
        );
    }
    let mut filter = Vec::new();
    for c in &rule.filter {
        match condition(ds, c.get_ref()) {
            Ok(c) => filter.push(c),
            Err(e) => cx.err(
                c.span(),
                format!("purpose {pid}: dataset {name}: filter: {e}"),
            ),
        }
    }
    (cx.problems.len() == before).then_some(DatasetRule {
        filter,
        persons,
        fields,
    })
}

/// What to write for a field instead of a transform that does not fit it.
fn fitting_fix(f: &skp_core::catalog::Field) -> String {
    let fits: Vec<&str> = Transform::ALL
        .iter()
        .filter(|x| !matches!(x, Transform::Keep | Transform::Deny) && x.applies_to_field(f))
        .map(|x| x.name())
        .collect();
    if fits.is_empty() {
        "write \"keep\" or \"deny\" (no generalisation applies to it)".to_string()
    } else {
        format!("write \"keep\", \"deny\" or one of: {}", fits.join(", "))
    }
}

fn condition(ds: &Dataset, c: &RawCondition) -> Result<Condition, String> {
    if !c.or.is_empty() {
        if c.in_.is_some()
            || c.min.is_some()
            || c.max.is_some()
            || c.is.is_some()
            || !c.field.is_empty()
        {
            return Err("a condition with `or` has nothing else (write field = \"\")".into());
        }
        return c
            .or
            .iter()
            .map(|x| condition(ds, x))
            .collect::<Result<_, _>>()
            .map(Condition::Or);
    }
    let Some(f) = ds.field(&c.field) else {
        let known: Vec<&str> = ds.fields.iter().map(|f| f.name.as_str()).collect();
        return Err(format!(
            "no field {:?}{}",
            c.field,
            skp_core::catalog::suggest(&c.field, &known)
        ));
    };
    if f.class == FieldClass::Direct {
        return Err(format!(
            "{} is a direct identifier; the gateway never holds it",
            c.field
        ));
    }
    use skp_core::catalog::FieldType as T;
    match (&c.in_, c.min.is_some() || c.max.is_some(), c.is) {
        (Some(vals), false, None) => {
            if !f.values.is_empty() {
                for v in vals {
                    if !f.values.contains(v) {
                        let known: Vec<&str> = f.values.iter().map(String::as_str).collect();
                        return Err(format!(
                            "{v:?} is not a value of {}{}; its values: {}",
                            c.field,
                            skp_core::catalog::suggest(v, &known),
                            known.join(", ")
                        ));
                    }
                }
            }
            Ok(Condition::In(c.field.clone(), vals.clone()))
        }
        (None, true, None) if f.ty == T::Int => Ok(Condition::Range(c.field.clone(), c.min, c.max)),
        (None, true, None) => Err(format!(
            "min/max apply to int fields; {} is {}",
            c.field,
            f.ty.as_str()
        )),
        (None, false, Some(b)) if f.ty == T::Bool => Ok(Condition::Is(c.field.clone(), b)),
        (None, false, Some(_)) => Err(format!(
            "`is` applies to bool fields; {} is {}",
            c.field,
            f.ty.as_str()
        )),
        _ => Err("write exactly one of `in = [...]`, `min`/`max`, or `is = true|false`".into()),
    }
}
