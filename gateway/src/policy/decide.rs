//! Decisions: what a requester may receive under an agreement and purpose, field by field.
//!
//! Deny by default. A request names an agreement, a purpose and a dataset exactly (no case
//! folding, no Unicode normalisation: a look-alike character is another, unknown name) and
//! optionally the fields wanted, each optionally with a coarser generalisation
//! (`incident_date:year`). Each field is then kept, generalised (to the coarser of what was
//! asked and what the agreement allows) or denied with the rule that denied it. A request is
//! refused as a whole, naming one rule, when the agreement or purpose is unknown, not in force,
//! the requester is not a recipient, or the dataset or a field is unknown.

use super::Policy;
use super::isa::{Agreement, Condition, Disposition, Output, Purpose};
use skp_core::transform::Transform;
use time::OffsetDateTime;

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    /// Subject (JWT `sub`).
    pub sub: String,
    /// Agency (JWT `agency`).
    pub agency: Option<String>,
    /// Roles (JWT `roles`).
    pub roles: Vec<String>,
}

/// What is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Agreement id.
    pub agreement: String,
    /// Purpose id.
    pub purpose: String,
    /// Dataset name.
    pub dataset: String,
    /// Fields wanted (`name` or `name:transform`); empty means every field.
    pub fields: Vec<String>,
}

/// Why a request or field was refused: a stable rule name and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Stable rule name, e.g. `expired`, `not-a-recipient`, `isa-deny`.
    pub rule: &'static str,
    /// What happened and, where there is one, the fix.
    pub message: String,
}

/// What happens to one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldOutcome {
    /// Released as stored.
    Keep,
    /// Released generalised with this transform.
    Generalised(Transform),
    /// Not released.
    Denied(Denial),
}

impl FieldOutcome {
    /// `keep`, the transform name, or `deny`.
    pub fn name(&self) -> &'static str {
        match self {
            FieldOutcome::Keep => "keep",
            FieldOutcome::Generalised(t) => t.name(),
            FieldOutcome::Denied(_) => "deny",
        }
    }

    /// Whether anything of the field is released.
    pub fn released(&self) -> bool {
        !matches!(self, FieldOutcome::Denied(_))
    }
}

/// The decision on a request.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Refused as a whole, and why.
    pub denial: Option<Denial>,
    /// Every field of the dataset (or every field asked) with its outcome, in catalog order.
    pub fields: Vec<(String, FieldOutcome)>,
    /// Row conditions applied.
    pub filter: Vec<Condition>,
    /// Person roles whose re-keyed ids are released.
    pub persons: Vec<String>,
    /// Output kind of the purpose.
    pub output: Option<Output>,
    /// Agreement id, version and file SHA-256, when the agreement is known.
    pub agreement: Option<(String, String, String)>,
}

impl Explanation {
    /// Whether the request is allowed (something is released).
    pub fn allowed(&self) -> bool {
        self.denial.is_none()
    }

    fn refuse(rule: &'static str, message: String) -> Explanation {
        Explanation {
            denial: Some(Denial { rule, message }),
            fields: Vec::new(),
            filter: Vec::new(),
            persons: Vec::new(),
            output: None,
            agreement: None,
        }
    }
}

/// Decides a request at instant `now`.
pub fn explain(
    policy: &Policy,
    catalog: &skp_core::Catalog,
    who: &Requester,
    req: &Request,
    now: OffsetDateTime,
) -> Explanation {
    let Some(a) = policy.agreement(&req.agreement) else {
        let known: Vec<&str> = policy.agreements().iter().map(|a| a.id.as_str()).collect();
        return Explanation::refuse(
            "unknown-agreement",
            format!(
                "no agreement {:?}{}",
                req.agreement,
                skp_core::catalog::suggest(&req.agreement, &known)
            ),
        );
    };
    let mut e = decide_in(a, catalog, who, req, now);
    e.agreement = Some((a.id.clone(), a.version.clone(), a.sha256.clone()));
    e
}

fn decide_in(
    a: &Agreement,
    catalog: &skp_core::Catalog,
    who: &Requester,
    req: &Request,
    now: OffsetDateTime,
) -> Explanation {
    let Some(p) = a.purposes.iter().find(|p| p.id == req.purpose) else {
        let known: Vec<&str> = a.purposes.iter().map(|p| p.id.as_str()).collect();
        return Explanation::refuse(
            "unknown-purpose",
            format!(
                "agreement {} has no purpose {:?}{}; its purposes: {}",
                a.id,
                req.purpose,
                skp_core::catalog::suggest(&req.purpose, &known),
                known.join(", ")
            ),
        );
    };
    if now < a.valid_from {
        return Explanation::refuse(
            "not-yet-valid",
            format!("agreement {} is valid from {}", a.id, a.valid_from),
        );
    }
    if now > a.valid_until {
        return Explanation::refuse(
            "expired",
            format!("agreement {} expired at {}", a.id, a.valid_until),
        );
    }
    if let Err(d) = recipient(p, who) {
        return Explanation {
            denial: Some(d),
            ..Explanation::refuse("", String::new())
        };
    }
    let Some(rule) = p.datasets.get(&req.dataset) else {
        let known: Vec<&str> = p.datasets.keys().map(String::as_str).collect();
        return Explanation::refuse(
            "unknown-dataset",
            format!(
                "purpose {} of {} does not include dataset {:?}{}; it includes: {}",
                p.id,
                a.id,
                req.dataset,
                skp_core::catalog::suggest(&req.dataset, &known),
                known.join(", ")
            ),
        );
    };
    let Some(ds) = catalog.dataset(&req.dataset) else {
        return Explanation::refuse(
            "unknown-dataset",
            format!("dataset {:?} is not in the catalog", req.dataset),
        );
    };
    // Fields asked: (name, optional coarser transform).
    let mut asked: Vec<(String, Option<Transform>)> = Vec::new();
    if req.fields.is_empty() || req.fields.iter().any(|f| f == "*") {
        asked.extend(ds.fields.iter().map(|f| (f.name.to_string(), None)));
    } else {
        for f in &req.fields {
            let (name, t) = match f.split_once(':') {
                Some((n, t)) => match Transform::parse(t) {
                    Ok(t) => (n, Some(t)),
                    Err(e) => return Explanation::refuse("unknown-transform", format!("{f}: {e}")),
                },
                None => (f.as_str(), None),
            };
            let Some(field) = ds.field(name) else {
                let known: Vec<&str> = ds.fields.iter().map(|f| f.name.as_str()).collect();
                return Explanation::refuse(
                    "unknown-field",
                    format!(
                        "dataset {} has no field {name:?}{}",
                        ds.name,
                        skp_core::catalog::suggest(name, &known)
                    ),
                );
            };
            if let Some(t) = t
                && !t.applies_to_field(field)
            {
                return Explanation::refuse(
                    "unknown-transform",
                    format!(
                        "{f}: {} does not apply to a field of type {}",
                        t.name(),
                        field.ty.as_str()
                    ),
                );
            }
            asked.push((name.to_owned(), t));
        }
    }
    let fields: Vec<(String, FieldOutcome)> = asked
        .into_iter()
        .map(|(name, want)| {
            let disp = rule.fields.get(&name).copied().unwrap_or(Disposition::Deny);
            let outcome = field_outcome(&a.id, &p.id, &name, disp, want);
            (name, outcome)
        })
        .collect();
    let denial = (!fields.iter().any(|(_, o)| o.released())).then(|| Denial {
        rule: "no-field-released",
        message: format!(
            "purpose {} of {} releases none of the fields asked of {}",
            p.id, a.id, ds.name
        ),
    });
    Explanation {
        denial,
        fields,
        filter: rule.filter.clone(),
        persons: rule.persons.clone(),
        output: Some(p.output),
        agreement: None,
    }
}

/// The outcome of one field: the coarser of the agreement's disposition and what was asked.
fn field_outcome(
    aid: &str,
    pid: &str,
    name: &str,
    disp: Disposition,
    want: Option<Transform>,
) -> FieldOutcome {
    let outcome = chosen(aid, pid, name, disp, want);
    match outcome {
        FieldOutcome::Generalised(t) if t.releases_nothing() => FieldOutcome::Denied(Denial {
            rule: "isa-deny",
            message: format!(
                "{aid} purpose {pid} releases nothing of {name} ({})",
                t.name()
            ),
        }),
        FieldOutcome::Generalised(skp_core::transform::Transform::Keep) => FieldOutcome::Keep,
        o => o,
    }
}

fn chosen(
    aid: &str,
    pid: &str,
    name: &str,
    disp: Disposition,
    want: Option<Transform>,
) -> FieldOutcome {
    match (disp, want) {
        (Disposition::Deny, _) => FieldOutcome::Denied(Denial {
            rule: "isa-deny",
            message: format!("{aid} purpose {pid} does not release {name}"),
        }),
        (Disposition::Keep, None) => FieldOutcome::Keep,
        (Disposition::Keep, Some(t)) => FieldOutcome::Generalised(t),
        (Disposition::Generalise(g), None) => FieldOutcome::Generalised(g),
        (Disposition::Generalise(g), Some(t)) => {
            if skp_core::transform::coarser_or_equal(t, g) {
                FieldOutcome::Generalised(t)
            } else {
                FieldOutcome::Generalised(g)
            }
        }
    }
}

/// Whether the requester is a recipient of the purpose.
fn recipient(p: &Purpose, who: &Requester) -> Result<(), Denial> {
    let ok = p.recipients.iter().any(|r| {
        who.agency.as_deref() == Some(r.agency.as_str())
            && who.roles.contains(&r.role)
            && (r.subjects.is_empty() || r.subjects.contains(&who.sub))
    });
    if ok {
        return Ok(());
    }
    let list: Vec<String> = p
        .recipients
        .iter()
        .map(|r| format!("{} {}", r.agency, r.role))
        .collect();
    Err(Denial {
        rule: "not-a-recipient",
        message: format!(
            "{} ({}, roles {}) is not a recipient of purpose {}; recipients: {}",
            who.sub,
            who.agency.as_deref().unwrap_or("no agency"),
            if who.roles.is_empty() {
                "none".to_string()
            } else {
                who.roles.join(",")
            },
            p.id,
            list.join("; ")
        ),
    })
}
