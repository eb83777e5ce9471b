//! The partnership dataset catalog: one TOML file per dataset under `policies/catalog/`.
//!
//! Parse, don't validate: TOML is read into raw structs (`deny_unknown_fields`), then checked
//! into [`Catalog`], which cannot hold a bad state. Every problem of every file is collected and
//! reported as `file:line: what is wrong; how to fix it`. Never does I/O: callers pass text.

use crate::ids::{AgencyId, DatasetName, FieldName};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

include!(concat!(env!("OUT_DIR"), "/embedded_catalog.rs"));

/// Default longest text value, in characters.
pub const DEFAULT_MAX_TEXT: u32 = 255;

/// Token kinds a role may derive, with the identifier types each part must have.
pub const TOKEN_KINDS: &[&str] = &["nhs", "pnc", "demo", "uprn", "ref"];

/// Type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Free or coded text.
    Str,
    /// Whole number.
    Int,
    /// Calendar date, sent as `YYYY-MM-DD`.
    Date,
    /// Local date and time, sent as `YYYY-MM-DDTHH:MM[:SS]`.
    Datetime,
    /// One of `values`.
    Enum,
    /// `true` / `false`.
    Bool,
    /// Any subset of `values`.
    Set,
    /// NHS number (10 digits, mod-11 check). Direct identifier.
    NhsNumber,
    /// Police National Computer id (`YYYY/NNNNNNNC`). Direct identifier.
    PncId,
    /// Person name. Direct identifier.
    Name,
    /// UK postcode. Direct identifier.
    Postcode,
    /// A case or record reference. Direct identifier.
    Reference,
    /// Unique Property Reference Number. Direct identifier.
    Uprn,
}

impl FieldType {
    /// Whether values of this type are direct identifiers that only the agent may read.
    pub fn is_identifier(self) -> bool {
        matches!(
            self,
            Self::NhsNumber
                | Self::PncId
                | Self::Name
                | Self::Postcode
                | Self::Reference
                | Self::Uprn
        )
    }
    const ALL: &'static [(&'static str, FieldType)] = &[
        ("str", Self::Str),
        ("int", Self::Int),
        ("date", Self::Date),
        ("datetime", Self::Datetime),
        ("enum", Self::Enum),
        ("bool", Self::Bool),
        ("set", Self::Set),
        ("nhs_number", Self::NhsNumber),
        ("pnc_id", Self::PncId),
        ("name", Self::Name),
        ("postcode", Self::Postcode),
        ("reference", Self::Reference),
        ("uprn", Self::Uprn),
    ];
    /// Parses the catalog spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, t)| *t)
    }
    /// The catalog spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("str")
    }
}

/// Classification of a field (domain research part B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldClass {
    /// Direct identifier: never leaves the agency; replaced by tokens.
    Direct,
    /// Quasi-identifier: generalised per purpose.
    Quasi,
    /// Special category, criminal-offence or otherwise sensitive.
    Special,
    /// Operational.
    Operational,
}

impl FieldClass {
    const ALL: &'static [(&'static str, FieldClass)] = &[
        ("direct", Self::Direct),
        ("quasi", Self::Quasi),
        ("special", Self::Special),
        ("operational", Self::Operational),
    ];
    /// Parses the catalog spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, t)| *t)
    }
    /// The catalog spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("operational")
    }
}

/// A validated field of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// Field name.
    pub name: FieldName,
    /// Value type.
    pub ty: FieldType,
    /// Classification.
    pub class: FieldClass,
    /// Whether every record must carry a value.
    pub required: bool,
    /// Allowed values (enum and set only).
    pub values: Vec<String>,
    /// Longest text value in characters (str only).
    pub max_len: u32,
    /// What the field holds.
    pub description: String,
}

impl Field {
    /// Whether the field's value is sent to the gateway (anything but a direct identifier).
    pub fn is_sent(&self) -> bool {
        self.class != FieldClass::Direct
    }
}

/// A token a role derives: its kind and the fields it is computed from, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecipe {
    /// `nhs`, `pnc`, `demo`, `uprn` or `ref`.
    pub kind: String,
    /// Fields whose normalised values form the token.
    pub fields: Vec<FieldName>,
}

/// A person role in a record (victim, suspect, person, …) and its token recipes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    /// Role name.
    pub name: String,
    /// Token recipes.
    pub tokens: Vec<TokenRecipe>,
}

/// A validated dataset schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// Dataset name.
    pub name: DatasetName,
    /// The agency that owns and submits it.
    pub owner: AgencyId,
    /// Schema version.
    pub version: u32,
    /// What one row is.
    pub description: String,
    /// Fields in catalog order.
    pub fields: Vec<Field>,
    /// Person roles.
    pub roles: Vec<Role>,
    /// Fields whose values form the record key token.
    pub record_key: Vec<FieldName>,
}

impl Dataset {
    /// Looks a field up by name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name.as_str() == name)
    }
    /// Fields whose values are sent, in catalog order (the order of stored values and of the
    /// content hash).
    pub fn sent_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| f.is_sent())
    }
}

/// The whole catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    datasets: BTreeMap<DatasetName, Dataset>,
    sha256: String,
}

impl Catalog {
    /// The catalog compiled into this binary from `policies/catalog/`.
    pub fn embedded() -> Result<Self, CatalogError> {
        Self::from_files(
            EMBEDDED
                .iter()
                .map(|(n, t)| (format!("policies/catalog/{n}"), t.to_string())),
        )
    }

    /// Builds a catalog from `(file name, TOML text)` pairs, collecting every error.
    pub fn from_files(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, CatalogError> {
        let mut problems = Vec::new();
        let mut datasets = BTreeMap::new();
        let mut hasher = Sha256::new();
        let mut files: Vec<(String, String)> = files.into_iter().collect();
        files.sort();
        for (file, text) in &files {
            hasher.update((file.len() as u64).to_be_bytes());
            hasher.update(file.as_bytes());
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
            match parse_dataset(file, text) {
                Ok(ds) => {
                    if let Some(prev) = datasets.insert(ds.name.clone(), ds) {
                        problems.push(Problem {
                            file: file.clone(),
                            line: 1,
                            message: format!(
                                "dataset \"{}\" is defined twice; rename one of the files' `name`",
                                prev.name
                            ),
                        });
                    }
                }
                Err(mut p) => problems.append(&mut p),
            }
        }
        if files.is_empty() {
            problems.push(Problem {
                file: "catalog".into(),
                line: 0,
                message: "no *.toml dataset files found; point `catalog_dir` at policies/catalog"
                    .into(),
            });
        }
        if problems.is_empty() {
            Ok(Self {
                datasets,
                sha256: hex::encode(hasher.finalize()),
            })
        } else {
            Err(CatalogError { problems })
        }
    }

    /// A dataset by name.
    pub fn dataset(&self, name: &str) -> Option<&Dataset> {
        DatasetName::new(name)
            .ok()
            .and_then(|n| self.datasets.get(&n))
    }
    /// All datasets, by name.
    pub fn datasets(&self) -> impl Iterator<Item = &Dataset> {
        self.datasets.values()
    }
    /// The datasets an agency owns.
    pub fn owned_by<'a>(&'a self, agency: &'a AgencyId) -> impl Iterator<Item = &'a Dataset> + 'a {
        self.datasets.values().filter(move |d| &d.owner == agency)
    }
    /// SHA-256 (hex) over the catalog's files.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// Builds a catalog directly from validated datasets (e.g. received from the gateway).
    pub fn from_datasets(datasets: Vec<Dataset>, sha256: String) -> Self {
        Self {
            datasets: datasets.into_iter().map(|d| (d.name.clone(), d)).collect(),
            sha256,
        }
    }
}

/// One problem in one catalog file.
#[derive(Debug, Clone)]
pub struct Problem {
    /// File name as given.
    pub file: String,
    /// 1-based line (0 when the file as a whole is at fault).
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Every problem found in the catalog.
#[derive(Debug, Clone, thiserror::Error)]
pub struct CatalogError {
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the dataset catalog has {} problem(s):",
            self.problems.len()
        )?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataset {
    name: toml::Spanned<String>,
    owner: toml::Spanned<String>,
    version: u32,
    #[serde(default)]
    description: String,
    record_key: toml::Spanned<Vec<String>>,
    #[serde(default)]
    roles: Vec<RawRole>,
    fields: Vec<RawField>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: toml::Spanned<String>,
    #[serde(rename = "type")]
    ty: toml::Spanned<String>,
    class: toml::Spanned<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    values: Vec<String>,
    max_len: Option<u32>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    name: toml::Spanned<String>,
    tokens: BTreeMap<String, toml::Spanned<Vec<String>>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn parse_dataset(file: &str, text: &str) -> Result<Dataset, Vec<Problem>> {
    let raw: RawDataset = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
        vec![Problem {
            file: file.into(),
            line,
            message: e.message().trim().to_string(),
        }]
    })?;
    let mut problems = Vec::new();
    let mut err = |span: std::ops::Range<usize>, message: String| {
        problems.push(Problem {
            file: file.into(),
            line: line_of(text, span.start),
            message,
        })
    };

    let name = DatasetName::new(raw.name.get_ref().clone());
    if let Err(e) = &name {
        err(raw.name.span(), format!("dataset name: {e}"));
    }
    let expected_file = format!("{}.toml", raw.name.get_ref());
    if !file.ends_with(&expected_file) {
        err(
            raw.name.span(),
            format!(
                "dataset \"{}\" must live in a file named {expected_file}",
                raw.name.get_ref()
            ),
        );
    }
    let owner = AgencyId::new(raw.owner.get_ref().clone());
    if let Err(e) = &owner {
        err(raw.owner.span(), format!("owner: {e}"));
    }

    let mut fields: Vec<Field> = Vec::new();
    let mut seen = BTreeSet::new();
    for rf in &raw.fields {
        let fname = match FieldName::new(rf.name.get_ref().clone()) {
            Ok(n) => n,
            Err(e) => {
                err(rf.name.span(), format!("field name: {e}"));
                continue;
            }
        };
        if !seen.insert(fname.clone()) {
            err(
                rf.name.span(),
                format!("field \"{fname}\" is defined twice; remove one"),
            );
        }
        let Some(ty) = FieldType::parse(rf.ty.get_ref()) else {
            let names: Vec<&str> = FieldType::ALL.iter().map(|(n, _)| *n).collect();
            err(
                rf.ty.span(),
                format!(
                    "field \"{fname}\": unknown type \"{}\"{}; expected one of {}",
                    rf.ty.get_ref(),
                    suggest(rf.ty.get_ref(), &names),
                    names.join(", ")
                ),
            );
            continue;
        };
        let Some(class) = FieldClass::parse(rf.class.get_ref()) else {
            let names: Vec<&str> = FieldClass::ALL.iter().map(|(n, _)| *n).collect();
            err(
                rf.class.span(),
                format!(
                    "field \"{fname}\": unknown class \"{}\"{}; expected one of {}",
                    rf.class.get_ref(),
                    suggest(rf.class.get_ref(), &names),
                    names.join(", ")
                ),
            );
            continue;
        };
        if ty.is_identifier() && class != FieldClass::Direct {
            err(
                rf.class.span(),
                format!(
                    "field \"{fname}\" has identifier type {} and must have class \"direct\" so it never leaves the agency",
                    ty.as_str()
                ),
            );
        }
        let has_values = matches!(ty, FieldType::Enum | FieldType::Set);
        if has_values && rf.values.is_empty() {
            err(
                rf.ty.span(),
                format!(
                    "field \"{fname}\": type {} needs a non-empty `values` list",
                    ty.as_str()
                ),
            );
        }
        if !has_values && !rf.values.is_empty() {
            err(
                rf.ty.span(),
                format!("field \"{fname}\": `values` is only for enum and set fields; remove it"),
            );
        }
        let mut vals = BTreeSet::new();
        for v in &rf.values {
            if !vals.insert(v) {
                err(
                    rf.ty.span(),
                    format!("field \"{fname}\": value {v:?} is listed twice"),
                );
            }
        }
        fields.push(Field {
            name: fname,
            ty,
            class,
            required: rf.required,
            values: rf.values.clone(),
            max_len: rf.max_len.unwrap_or(DEFAULT_MAX_TEXT),
            description: rf.description.clone(),
        });
    }

    let field_names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    let resolve = |names: &[String],
                   span: std::ops::Range<usize>,
                   what: &str,
                   problems: &mut Vec<Problem>| {
        let mut out = Vec::new();
        for n in names {
            match fields.iter().find(|f| f.name.as_str() == n) {
                Some(f) => out.push(f.name.clone()),
                None => problems.push(Problem {
                    file: file.into(),
                    line: line_of(text, span.start),
                    message: format!(
                        "{what}: unknown field \"{n}\"{}; declare it under [[fields]]",
                        suggest(n, &field_names)
                    ),
                }),
            }
        }
        out
    };
    let fields_by_name: Vec<(FieldName, FieldType)> =
        fields.iter().map(|f| (f.name.clone(), f.ty)).collect();
    let mut later = Vec::new();
    if raw.record_key.get_ref().is_empty() {
        later.push(Problem {
            file: file.into(),
            line: line_of(text, raw.record_key.span().start),
            message: "record_key must name at least one field".into(),
        });
    }
    let record_key = resolve(
        raw.record_key.get_ref(),
        raw.record_key.span(),
        "record_key",
        &mut later,
    );
    let mut roles = Vec::new();
    for rr in &raw.roles {
        let mut tokens = Vec::new();
        for (kind, flds) in &rr.tokens {
            if !TOKEN_KINDS.contains(&kind.as_str()) {
                later.push(Problem {
                    file: file.into(),
                    line: line_of(text, rr.name.span().start),
                    message: format!(
                        "role \"{}\": unknown token kind \"{kind}\"{}; expected one of {}",
                        rr.name.get_ref(),
                        suggest(kind, TOKEN_KINDS),
                        TOKEN_KINDS.join(", ")
                    ),
                });
                continue;
            }
            let what = format!("role \"{}\" token {kind}", rr.name.get_ref());
            let fields = resolve(flds.get_ref(), flds.span(), &what, &mut later);
            if flds.get_ref().is_empty() {
                later.push(Problem {
                    file: file.into(),
                    line: line_of(text, flds.span().start),
                    message: format!("{what}: name at least one field"),
                });
            }
            if fields.len() == flds.get_ref().len()
                && let Some(shape) = recipe_shape_problem(kind, &fields, |n| {
                    fields_by_name.iter().find(|f| &f.0 == n).map(|f| f.1)
                })
            {
                later.push(Problem {
                    file: file.into(),
                    line: line_of(text, flds.span().start),
                    message: format!("{what}: {shape}"),
                });
            }
            tokens.push(TokenRecipe {
                kind: kind.clone(),
                fields,
            });
        }
        roles.push(Role {
            name: rr.name.get_ref().clone(),
            tokens,
        });
    }
    problems.append(&mut later);

    match (name, owner) {
        (Ok(name), Ok(owner)) if problems.is_empty() => Ok(Dataset {
            name,
            owner,
            version: raw.version,
            description: raw.description,
            fields,
            roles,
            record_key,
        }),
        _ => Err(problems),
    }
}

/// Checks that a token recipe's fields have the types its kind needs.
fn recipe_shape_problem(
    kind: &str,
    fields: &[FieldName],
    ty: impl Fn(&FieldName) -> Option<FieldType>,
) -> Option<String> {
    use FieldType as T;
    let (expected, text): (&[FieldType], &str) = match kind {
        "nhs" => (&[T::NhsNumber], "one nhs_number field"),
        "pnc" => (&[T::PncId], "one pnc_id field"),
        "uprn" => (&[T::Uprn], "one uprn field"),
        "ref" => (&[T::Reference], "one reference field"),
        "demo" => (
            &[T::Name, T::Name, T::Date, T::Enum],
            "surname (name), forename (name), date of birth (date), sex (enum), in that order",
        ),
        _ => return None,
    };
    let got: Vec<Option<FieldType>> = fields.iter().map(&ty).collect();
    let ok = got.len() == expected.len() && got.iter().zip(expected).all(|(g, e)| *g == Some(*e));
    (!ok).then(|| format!("token kind {kind} needs {text}"))
}

/// ` (did you mean "x"?)` when a known name is one or two edits away.
pub fn suggest(got: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (edit_distance(got, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean \"{k}\"?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "demo_set"
owner = "lfb"
version = 1
record_key = ["ref"]

[[roles]]
name = "person"
tokens = { nhs = ["nhs"] }

[[fields]]
name = "ref"
type = "reference"
class = "direct"
required = true

[[fields]]
name = "nhs"
type = "nhs_number"
class = "direct"

[[fields]]
name = "kind"
type = "enum"
class = "operational"
values = ["a", "b"]
"#;

    #[test]
    fn embedded_catalog_is_valid() {
        let c = Catalog::embedded().unwrap_or_else(|e| panic!("{e}"));
        assert!(c.datasets().count() >= 7);
    }

    #[test]
    fn parses_a_good_dataset() {
        let c =
            Catalog::from_files([("demo_set.toml".to_string(), GOOD.to_string())]).expect("valid");
        let d = c.dataset("demo_set").expect("present");
        assert_eq!(d.sent_fields().count(), 1);
        assert_eq!(d.roles[0].tokens[0].kind, "nhs");
    }

    #[test]
    fn unknown_type_names_line_and_suggests() {
        let bad = GOOD.replace("type = \"enum\"", "type = \"enm\"");
        let e = Catalog::from_files([("demo_set.toml".to_string(), bad)]).expect_err("invalid");
        let s = e.to_string();
        assert!(s.contains("demo_set.toml:24:"), "{s}");
        assert!(s.contains("did you mean \"enum\""), "{s}");
    }

    #[test]
    fn unknown_key_is_an_error_with_line() {
        let bad = GOOD.replace("required = true", "required = true\nrequird = false");
        let e = Catalog::from_files([("demo_set.toml".to_string(), bad)]).expect_err("invalid");
        let s = e.to_string();
        assert!(s.contains("demo_set.toml:16:"), "{s}");
        assert!(s.contains("requird"), "{s}");
    }

    #[test]
    fn identifier_must_be_direct() {
        let bad = GOOD.replace(
            "type = \"nhs_number\"\nclass = \"direct\"",
            "type = \"nhs_number\"\nclass = \"quasi\"",
        );
        let e = Catalog::from_files([("demo_set.toml".to_string(), bad)]).expect_err("invalid");
        assert!(e.to_string().contains("must have class \"direct\""), "{e}");
    }

    #[test]
    fn unknown_token_field_is_reported() {
        let bad = GOOD.replace("nhs = [\"nhs\"]", "nhs = [\"nhs_no\"]");
        let e = Catalog::from_files([("demo_set.toml".to_string(), bad)]).expect_err("invalid");
        assert!(e.to_string().contains("unknown field \"nhs_no\""), "{e}");
    }
}
