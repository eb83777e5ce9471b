//! `agent person-token`: the linkage tokens this agent computes for one person, printed as
//! `KIND:HEX` so an information-governance officer can answer a subject access request with
//! `gateway audit person --token nhs:…,demo:…` ("which releases included this person?").
//!
//! Owns choosing, for each token kind, a recipe from the catalog among the agency's datasets, and
//! deriving the token through the very code `agent push` runs ([`Pseudonymiser::record`], with
//! the dataset's `agent.toml` mapping), so the tokens are byte-identical to those in pushed
//! records.
//!
//! Never prints, logs or puts into an error a raw identifier: errors and notes name the option
//! (`--nhs`) and the reason, and only tokens leave. [`person_tokens`] does no I/O; only
//! [`load_catalog`] reads a file.

use crate::config::{AgentConfig, Mapping};
use crate::pseudonymise::Pseudonymiser;
use crate::source::Row;
use anyhow::Context;
use skp_core::catalog::{Role, TOKEN_KINDS, TokenRecipe};
use skp_core::{Catalog, Dataset, FieldType, LinkageKey, Token};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

/// One person's raw identifiers, as given to `agent person-token`. `Debug` shows only which
/// are present.
#[derive(Clone, Default)]
pub struct PersonIdentifiers {
    /// NHS number (`--nhs`).
    pub nhs: Option<String>,
    /// PNC id (`--pnc`).
    pub pnc: Option<String>,
    /// Surname (`--surname`).
    pub surname: Option<String>,
    /// Forename (`--forename`).
    pub forename: Option<String>,
    /// Date of birth (`--dob`).
    pub dob: Option<String>,
    /// Sex, as a catalog value or a source code the dataset's mapping knows (`--sex`).
    pub sex: Option<String>,
    /// UPRN (`--uprn`).
    pub uprn: Option<String>,
}

impl fmt::Debug for PersonIdentifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given: Vec<&str> = IdOption::ALL
            .iter()
            .filter(|o| o.value(self).is_some())
            .map(|o| o.flag())
            .collect();
        write!(
            f,
            "PersonIdentifiers(<redacted>; given: {})",
            given.join(" ")
        )
    }
}

/// Which catalog recipes to use: by default, for each kind, the first recipe among the agency's
/// datasets (in name order) and their roles (in catalog order).
#[derive(Debug, Clone, Default)]
pub struct RecipeChoice {
    /// Only recipes of this dataset (`--dataset`).
    pub dataset: Option<String>,
    /// Only recipes of this role of `dataset` (`--role`).
    pub role: Option<String>,
}

/// A computed token and the recipe it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonToken {
    /// Token kind: `nhs`, `pnc`, `demo` or `uprn`.
    pub kind: String,
    /// The token.
    pub token: Token,
    /// Dataset whose recipe and mapping were used.
    pub dataset: String,
    /// Role whose recipe was used.
    pub role: String,
}

impl fmt::Display for PersonToken {
    /// `KIND:HEX`, 64 lowercase hex digits: what `gateway audit person --token` reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, hex::encode(self.token.as_bytes()))
    }
}

/// The tokens computed and what the officer should know about them.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// One token per kind, in the catalog's kind order (`nhs`, `pnc`, `demo`, `uprn`).
    pub tokens: Vec<PersonToken>,
    /// Kinds skipped or recipes that disagree; never holds a value.
    pub notes: Vec<String>,
}

/// Why no tokens can be given. No variant holds an identifier's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersonTokenError {
    /// A given identifier is not valid for its type; `reason` never repeats the value.
    #[error("{option}: {reason}")]
    Invalid {
        /// The option at fault, e.g. `--nhs`.
        option: &'static str,
        /// What is wrong and, where it helps, the expected shape.
        reason: String,
    },
    /// No kind had all its options given.
    #[error("no token can be computed from the options given; give {needed}{}", notes_suffix(.notes))]
    NothingToCompute {
        /// The option sets that would do, e.g. `--nhs, or all of --surname --forename …`.
        needed: String,
        /// Kinds skipped and why.
        notes: Vec<String>,
    },
    /// No recipe among the datasets considered derives a token this command can compute.
    #[error(
        "no nhs, pnc, demo or uprn token recipe in {scope}; check `agency` in agent.toml, or choose another --dataset"
    )]
    NoRecipes {
        /// The datasets considered, e.g. `the datasets of agency "lfb"`.
        scope: String,
    },
    /// `--dataset` names a dataset the agency does not own.
    #[error(
        "--dataset {dataset:?} is not a dataset of agency {agency:?}; its datasets are: {known}"
    )]
    UnknownDataset {
        /// As given.
        dataset: String,
        /// `agency` from agent.toml.
        agency: String,
        /// The agency's datasets, comma-separated.
        known: String,
    },
    /// `--role` names no role of the dataset.
    #[error("--role {role:?} is not a role of dataset {dataset}; its roles are: {known}")]
    UnknownRole {
        /// Dataset.
        dataset: String,
        /// As given.
        role: String,
        /// The dataset's roles, comma-separated.
        known: String,
    },
    /// A catalog recipe does not have the fields its kind needs (a catalog the gateway sent
    /// that its own validation should have refused).
    #[error(
        "dataset {dataset}, role {role}: the {kind} token recipe does not have the fields its kind needs; refresh the catalog with `agent check`"
    )]
    RecipeShape {
        /// Dataset.
        dataset: String,
        /// Role.
        role: String,
        /// Token kind.
        kind: String,
    },
}

fn notes_suffix(notes: &[String]) -> String {
    if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    }
}

/// Where the catalog came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogSource {
    /// The copy `agent push` cached from the gateway.
    Cached(PathBuf),
    /// The catalog compiled into this agent (no cache yet).
    Embedded,
}

/// The catalog `agent push` last used: the gateway's copy cached under the state directory, or,
/// before the first push or check, the catalog compiled into the agent.
pub fn load_catalog(cfg: &AgentConfig) -> anyhow::Result<(Catalog, CatalogSource)> {
    // The file `client::catalog` writes.
    let cache = cfg.state_dir.join("catalog.json");
    match std::fs::read(&cache) {
        Ok(bytes) => {
            let cat = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is corrupt; delete it and run `agent check`",
                    cache.display()
                )
            })?;
            Ok((cat, CatalogSource::Cached(cache)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((Catalog::embedded()?, CatalogSource::Embedded))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", cache.display())),
    }
}

/// The tokens `agent push` would put in records for this person, one per kind whose options
/// were all given. Values are mapped (`[datasets.*.values]`), checked and normalised exactly as
/// a pushed row's cells are. Pure: no I/O, no logging.
pub fn person_tokens(
    catalog: &Catalog,
    cfg: &AgentConfig,
    key: &LinkageKey,
    who: &PersonIdentifiers,
    choice: &RecipeChoice,
) -> Result<Outcome, PersonTokenError> {
    let datasets = candidate_datasets(catalog, cfg, choice)?;
    let mut out = Outcome::default();
    let mut needed: Vec<String> = Vec::new();
    for kind in TOKEN_KINDS {
        let Some(options) = options_for(kind) else {
            continue;
        };
        let candidates = recipes_of(&datasets, kind, choice.role.as_deref());
        let Some(&(ds, role, recipe)) = candidates.first() else {
            let given: Vec<&str> = options
                .iter()
                .filter(|o| o.value(who).is_some())
                .map(|o| o.flag())
                .collect();
            if !given.is_empty() {
                out.notes.push(format!(
                    "{} ignored: no {} of agency {} derives a {kind} token",
                    given.join(" "),
                    scope(choice),
                    cfg.agency
                ));
            }
            continue;
        };
        needed.push(if options.len() == 1 {
            options[0].flag().to_string()
        } else {
            format!(
                "all of {}",
                options
                    .iter()
                    .map(|o| o.flag())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        });
        let missing: Vec<&str> = options
            .iter()
            .filter(|o| o.value(who).is_none())
            .map(|o| o.flag())
            .collect();
        if missing.len() == options.len() {
            continue;
        }
        if !missing.is_empty() {
            out.notes.push(format!(
                "{kind} token skipped: {} not given",
                missing.join(" ")
            ));
            continue;
        }
        let mapping = cfg.mapping(ds.name.as_str());
        let shape = recipe_shape(ds, recipe, &mapping, options).ok_or_else(|| {
            PersonTokenError::RecipeShape {
                dataset: ds.name.to_string(),
                role: role.name.clone(),
                kind: kind.to_string(),
            }
        })?;
        let differing: Vec<&str> = candidates[1..]
            .iter()
            .filter(|(d, _, r)| {
                recipe_shape(d, r, &cfg.mapping(d.name.as_str()), options).as_ref() != Some(&shape)
            })
            .map(|(d, _, _)| d.name.as_str())
            .collect();
        if !differing.is_empty() {
            out.notes.push(format!(
                "the {kind} recipe of {} (role {}) was used; {} check or map its fields differently, and may give a different token: choose with --dataset and --role",
                ds.name,
                role.name,
                differing.join(", ")
            ));
        }
        let token = derive(ds, role, recipe, &mapping, key, who, options)?;
        out.tokens.push(PersonToken {
            kind: kind.to_string(),
            token,
            dataset: ds.name.to_string(),
            role: role.name.clone(),
        });
    }
    if out.tokens.is_empty() {
        if needed.is_empty() {
            return Err(PersonTokenError::NoRecipes {
                scope: match (&choice.dataset, &choice.role) {
                    (Some(d), Some(r)) => format!("role {r} of dataset {d}"),
                    (Some(d), None) => format!("dataset {d}"),
                    _ => format!("the datasets of agency {:?}", cfg.agency),
                },
            });
        }
        return Err(PersonTokenError::NothingToCompute {
            needed: needed.join(", or "),
            notes: out.notes,
        });
    }
    Ok(out)
}

/// An identifier option of the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdOption {
    Nhs,
    Pnc,
    Surname,
    Forename,
    Dob,
    Sex,
    Uprn,
}

impl IdOption {
    const ALL: [IdOption; 7] = [
        Self::Nhs,
        Self::Pnc,
        Self::Surname,
        Self::Forename,
        Self::Dob,
        Self::Sex,
        Self::Uprn,
    ];

    fn flag(self) -> &'static str {
        match self {
            Self::Nhs => "--nhs",
            Self::Pnc => "--pnc",
            Self::Surname => "--surname",
            Self::Forename => "--forename",
            Self::Dob => "--dob",
            Self::Sex => "--sex",
            Self::Uprn => "--uprn",
        }
    }

    fn value(self, who: &PersonIdentifiers) -> Option<&str> {
        match self {
            Self::Nhs => who.nhs.as_deref(),
            Self::Pnc => who.pnc.as_deref(),
            Self::Surname => who.surname.as_deref(),
            Self::Forename => who.forename.as_deref(),
            Self::Dob => who.dob.as_deref(),
            Self::Sex => who.sex.as_deref(),
            Self::Uprn => who.uprn.as_deref(),
        }
    }

    /// The catalog type of the recipe field this option fills.
    fn field_type(self) -> FieldType {
        match self {
            Self::Nhs => FieldType::NhsNumber,
            Self::Pnc => FieldType::PncId,
            Self::Surname | Self::Forename => FieldType::Name,
            Self::Dob => FieldType::Date,
            Self::Sex => FieldType::Enum,
            Self::Uprn => FieldType::Uprn,
        }
    }
}

/// The options filling a recipe of `kind`, in recipe order (the order the catalog enforces);
/// `None` for kinds this command does not compute (`ref`: an agency's own case reference).
fn options_for(kind: &str) -> Option<&'static [IdOption]> {
    use IdOption as O;
    match kind {
        "nhs" => Some(&[O::Nhs]),
        "pnc" => Some(&[O::Pnc]),
        "demo" => Some(&[O::Surname, O::Forename, O::Dob, O::Sex]),
        "uprn" => Some(&[O::Uprn]),
        _ => None,
    }
}

/// The agency's datasets, or the one `--dataset` names.
fn candidate_datasets<'c>(
    catalog: &'c Catalog,
    cfg: &AgentConfig,
    choice: &RecipeChoice,
) -> Result<Vec<&'c Dataset>, PersonTokenError> {
    let mine: Vec<&Dataset> = catalog
        .datasets()
        .filter(|d| d.owner.as_str() == cfg.agency)
        .collect();
    let Some(name) = &choice.dataset else {
        return Ok(mine);
    };
    let Some(ds) = mine.iter().find(|d| d.name.as_str() == name) else {
        return Err(PersonTokenError::UnknownDataset {
            dataset: name.clone(),
            agency: cfg.agency.clone(),
            known: list(mine.iter().map(|d| d.name.as_str())),
        });
    };
    if let Some(role) = &choice.role
        && !ds.roles.iter().any(|r| &r.name == role)
    {
        return Err(PersonTokenError::UnknownRole {
            dataset: ds.name.to_string(),
            role: role.clone(),
            known: list(ds.roles.iter().map(|r| r.name.as_str())),
        });
    }
    Ok(vec![*ds])
}

/// Every recipe of `kind` among the datasets, in dataset then role order.
fn recipes_of<'c>(
    datasets: &[&'c Dataset],
    kind: &str,
    role: Option<&str>,
) -> Vec<(&'c Dataset, &'c Role, &'c TokenRecipe)> {
    datasets
        .iter()
        .flat_map(|d| {
            d.roles
                .iter()
                .filter(move |r| role.is_none_or(|name| r.name == name))
                .flat_map(move |r| {
                    r.tokens
                        .iter()
                        .filter(move |t| t.kind == kind)
                        .map(move |t| (*d, r, t))
                })
        })
        .collect()
}

/// What makes two recipes of one kind give the same token for the same input: each field's
/// type, allowed values and the mapping's source codes. `None` when the fields are not those the
/// kind's options fill.
type Shape = Vec<(FieldType, Vec<String>, Option<BTreeMap<String, String>>)>;

fn recipe_shape(
    ds: &Dataset,
    recipe: &TokenRecipe,
    mapping: &Mapping,
    options: &[IdOption],
) -> Option<Shape> {
    if recipe.fields.len() != options.len() {
        return None;
    }
    recipe
        .fields
        .iter()
        .zip(options)
        .map(|(name, option)| {
            let f = ds.field(name.as_str())?;
            (f.ty == option.field_type()).then(|| {
                (
                    f.ty,
                    f.values.clone(),
                    mapping.values.get(name.as_str()).cloned(),
                )
            })
        })
        .collect()
}

/// Derives one token by pseudonymising a one-row dataset that holds only the recipe's fields:
/// the same mapping, checks, normalisation and derivation as a pushed row.
fn derive(
    ds: &Dataset,
    role: &Role,
    recipe: &TokenRecipe,
    mapping: &Mapping,
    key: &LinkageKey,
    who: &PersonIdentifiers,
    options: &[IdOption],
) -> Result<Token, PersonTokenError> {
    let fields = recipe
        .fields
        .iter()
        .filter_map(|n| ds.field(n.as_str()).cloned())
        .collect();
    let only_recipe = Dataset {
        name: ds.name.clone(),
        owner: ds.owner.clone(),
        version: ds.version,
        description: String::new(),
        fields,
        roles: vec![Role {
            name: role.name.clone(),
            tokens: vec![recipe.clone()],
        }],
        record_key: recipe.fields.clone(),
    };
    let cells: HashMap<String, String> = recipe
        .fields
        .iter()
        .zip(options)
        .filter_map(|(name, option)| {
            option
                .value(who)
                .map(|v| (mapping.column(name.as_str()).to_string(), v.to_string()))
        })
        .collect();
    let record = Pseudonymiser::new(&only_recipe, mapping, key)
        .record(&Row { line: 1, cells })
        .map_err(|p| {
            let option = recipe
                .fields
                .iter()
                .position(|f| f.as_str() == p.field)
                .map(|i| options[i].flag())
                .unwrap_or("an identifier option");
            PersonTokenError::Invalid {
                option,
                reason: p.reason,
            }
        })?;
    let bytes = record
        .persons
        .first()
        .and_then(|p| p.tokens.first())
        .map(|t| t.token.as_slice())
        .expect("record() derives the token of a recipe whose fields all have valid values");
    Ok(Token::from_slice(bytes).expect("record() tokens are 32 bytes"))
}

fn scope(choice: &RecipeChoice) -> String {
    match (&choice.dataset, &choice.role) {
        (Some(d), Some(r)) => format!("role {r} of dataset {d}"),
        (Some(d), None) => format!("role of dataset {d}"),
        _ => "dataset".to_string(),
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = names.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_which_options_not_their_values() {
        let who = PersonIdentifiers {
            nhs: Some("9434765919".into()),
            surname: Some("O'Brien".into()),
            ..Default::default()
        };
        let s = format!("{who:?}");
        assert!(s.contains("--nhs") && s.contains("--surname"), "{s}");
        assert!(!s.contains("9434765919") && !s.contains("Brien"), "{s}");
    }

    #[test]
    fn every_computed_kind_has_options_of_the_types_the_catalog_enforces() {
        let cat = Catalog::embedded().expect("embedded catalog");
        let mut seen = 0;
        for d in cat.datasets() {
            for r in &d.roles {
                for t in &r.tokens {
                    if let Some(options) = options_for(&t.kind) {
                        let shape = recipe_shape(d, t, &Mapping::default(), options);
                        assert!(shape.is_some(), "{} {} {}", d.name, r.name, t.kind);
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 0);
    }
}
