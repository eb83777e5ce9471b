//! Applying a decision to stored records: the row filter, then each released field through its
//! transform. Compiled once per release ([`ReleasePlan::new`]) so the per-record work is an
//! index lookup and a transform per released column.

use super::decide::{Explanation, FieldOutcome};
use super::isa::Condition;
use sharing_proto::v1::Value;
use sharing_proto::v1::value::Kind;
use skp_core::catalog::Dataset;
use skp_core::transform::{Cell, Released, Transform, TransformError};
use std::collections::HashSet;

/// One released column.
#[derive(Debug, Clone)]
pub struct Column {
    /// The field's name (the column header).
    pub name: String,
    /// Index of the field's value in a stored record (catalog order of sent fields).
    index: usize,
    /// `Keep` or a generalisation.
    transform: Transform,
}

impl Column {
    /// The transform applied (`Keep` when released as stored).
    pub fn transform(&self) -> Transform {
        self.transform
    }
}

#[derive(Debug, Clone)]
enum Compiled {
    In(usize, HashSet<String>),
    Range(usize, Option<i64>, Option<i64>),
    Is(usize, bool),
    Or(Vec<Compiled>),
}

/// A decision compiled against a dataset's stored layout.
#[derive(Debug, Clone)]
pub struct ReleasePlan {
    /// The released columns, in catalog order.
    pub columns: Vec<Column>,
    filter: Vec<Compiled>,
}

/// Why a record could not be released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {error}")]
pub struct ApplyError {
    /// The field.
    pub field: String,
    /// The transform's complaint (never the value).
    pub error: TransformError,
}

impl ReleasePlan {
    /// Compiles an allowed explanation for dataset `ds`.
    pub fn new(ds: &Dataset, e: &Explanation) -> Result<ReleasePlan, String> {
        if let Some(d) = &e.denial {
            return Err(format!(
                "the request is denied by {}: {}",
                d.rule, d.message
            ));
        }
        let sent: Vec<&str> = ds.sent_fields().map(|f| f.name.as_str()).collect();
        let index = |name: &str| {
            sent.iter()
                .position(|f| *f == name)
                .ok_or_else(|| format!("{name} is not a field the gateway stores for {}", ds.name))
        };
        let mut columns = Vec::new();
        for (name, outcome) in &e.fields {
            let transform = match outcome {
                FieldOutcome::Keep => Transform::Keep,
                FieldOutcome::Generalised(t) => *t,
                FieldOutcome::Denied(_) => continue,
            };
            columns.push(Column {
                name: name.clone(),
                index: index(name)?,
                transform,
            });
        }
        fn compile(
            c: &Condition,
            index: &dyn Fn(&str) -> Result<usize, String>,
        ) -> Result<Compiled, String> {
            Ok(match c {
                Condition::In(f, v) => Compiled::In(index(f)?, v.iter().cloned().collect()),
                Condition::Range(f, lo, hi) => Compiled::Range(index(f)?, *lo, *hi),
                Condition::Is(f, b) => Compiled::Is(index(f)?, *b),
                Condition::Or(cs) => Compiled::Or(
                    cs.iter()
                        .map(|c| compile(c, index))
                        .collect::<Result<_, _>>()?,
                ),
            })
        }
        let filter = e
            .filter
            .iter()
            .map(|c| compile(c, &index))
            .collect::<Result<_, _>>()?;
        Ok(ReleasePlan { columns, filter })
    }

    /// Whether a stored record passes the row filter.
    pub fn admits(&self, values: &[Value]) -> bool {
        self.filter.iter().all(|c| holds(c, values))
    }

    /// The released cells of a stored record, one per column (`None`: empty cell). A cell the
    /// transform cannot read (e.g. an age out of range) is released empty, never as stored;
    /// each such cell is reported in `withheld` (field and reason, never the value).
    pub fn apply<'a>(
        &self,
        values: &'a [Value],
        out: &mut Vec<Released<'a>>,
        withheld: &mut Vec<ApplyError>,
    ) {
        out.clear();
        for c in &self.columns {
            let cell = values.get(c.index).map(Cell::from).unwrap_or(Cell::Missing);
            match c.transform.apply(cell) {
                Ok(v) => out.push(v),
                Err(error) => {
                    out.push(None);
                    withheld.push(ApplyError {
                        field: c.name.clone(),
                        error,
                    });
                }
            }
        }
    }
}

fn holds(c: &Compiled, values: &[Value]) -> bool {
    let kind = |i: &usize| values.get(*i).and_then(|v| v.kind.as_ref());
    match c {
        Compiled::In(i, set) => match kind(i) {
            Some(Kind::Text(s)) => set.contains(s),
            Some(Kind::Int(n)) => set.contains(&n.to_string()),
            Some(Kind::Set(s)) => s.items.iter().any(|x| set.contains(x)),
            _ => false,
        },
        Compiled::Range(i, lo, hi) => match kind(i) {
            Some(Kind::Int(n)) => lo.is_none_or(|l| *n >= l) && hi.is_none_or(|h| *n <= h),
            _ => false,
        },
        Compiled::Is(i, b) => matches!(kind(i), Some(Kind::Flag(f)) if f == b),
        Compiled::Or(cs) => cs.iter().any(|c| holds(c, values)),
    }
}
