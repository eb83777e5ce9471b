//! Applying a decision to stored records: the row filter, then each released field through its
//! transform. Compiled once per release ([`ReleasePlan::new`]) so the per-record work is an
//! index lookup and a transform per released column.

use super::decide::{Explanation, FieldOutcome};
use super::isa::Condition;
use skp_core::catalog::Dataset;
use skp_core::transform::{AsCell, Cell, Released, Transform, TransformError};
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
        let filter = e
            .filter
            .iter()
            .map(|c| compile(c, &index))
            .collect::<Result<_, _>>()?;
        Ok(ReleasePlan { columns, filter })
    }

    /// A plan that releases no column and admits the rows `conditions` admit: the rows of a
    /// dataset a purpose is granted, whatever fields a request asks for (what linkage for the
    /// purpose may go through).
    pub fn filter_only(ds: &Dataset, conditions: &[Condition]) -> Result<ReleasePlan, String> {
        let sent: Vec<&str> = ds.sent_fields().map(|f| f.name.as_str()).collect();
        let index = |name: &str| {
            sent.iter()
                .position(|f| *f == name)
                .ok_or_else(|| format!("{name} is not a field the gateway stores for {}", ds.name))
        };
        let filter = conditions
            .iter()
            .map(|c| compile(c, &index))
            .collect::<Result<_, _>>()?;
        Ok(ReleasePlan {
            columns: Vec::new(),
            filter,
        })
    }

    /// Whether the plan has a row filter.
    pub fn has_filter(&self) -> bool {
        !self.filter.is_empty()
    }

    /// The key of a record's class over the released values of `columns` (indices into
    /// [`ReleasePlan::columns`]): each value as released, `\u{1e}` for an empty cell, each
    /// followed by `\u{1f}`. Records with equal keys show equal values in those columns.
    pub fn class_key<V: AsCell>(&self, values: &[V], columns: &[usize], out: &mut String) {
        out.clear();
        for c in columns.iter().filter_map(|i| self.columns.get(*i)) {
            let cell = values.get(c.index).map_or(Cell::Missing, V::as_cell);
            match c.transform.apply(cell) {
                Ok(Some(v)) => out.push_str(&v),
                Ok(None) | Err(_) => out.push('\u{1e}'),
            }
            out.push('\u{1f}');
        }
    }

    /// [`ReleasePlan::value_mask`] for a reader that needs only the filter's fields and the
    /// values of `columns` (indices into [`ReleasePlan::columns`]).
    pub fn value_mask_of(&self, columns: &[usize]) -> Vec<bool> {
        let mut m = self.value_mask();
        m.iter_mut().for_each(|b| *b = false);
        fn mark(c: &Compiled, m: &mut Vec<bool>) {
            match c {
                Compiled::In(i, _) | Compiled::Range(i, _, _) | Compiled::Is(i, _) => {
                    if let Some(b) = m.get_mut(*i) {
                        *b = true;
                    }
                }
                Compiled::Or(cs) => cs.iter().for_each(|c| mark(c, m)),
            }
        }
        self.filter.iter().for_each(|c| mark(c, &mut m));
        for c in columns.iter().filter_map(|i| self.columns.get(*i)) {
            if let Some(b) = m.get_mut(c.index) {
                *b = true;
            }
        }
        m
    }

    /// Which stored values the plan reads (its columns and its filter's fields), by index: what
    /// a reader of the store needs to decode.
    pub fn value_mask(&self) -> Vec<bool> {
        fn mark(c: &Compiled, m: &mut Vec<bool>) {
            let i = match c {
                Compiled::In(i, _) | Compiled::Range(i, _, _) | Compiled::Is(i, _) => *i,
                Compiled::Or(cs) => {
                    cs.iter().for_each(|c| mark(c, m));
                    return;
                }
            };
            if m.len() <= i {
                m.resize(i + 1, false);
            }
            m[i] = true;
        }
        let mut m = Vec::new();
        for c in &self.columns {
            if m.len() <= c.index {
                m.resize(c.index + 1, false);
            }
            m[c.index] = true;
        }
        self.filter.iter().for_each(|c| mark(c, &mut m));
        m
    }

    /// Whether a stored record passes the row filter.
    pub fn admits<V: AsCell>(&self, values: &[V]) -> bool {
        self.filter.iter().all(|c| holds(c, values))
    }

    /// The released cells of a stored record, one per column (`None`: empty cell). A cell the
    /// transform cannot read (e.g. an age out of range) is released empty, never as stored;
    /// each such cell is reported in `withheld` (field and reason, never the value).
    pub fn apply<'a, V: AsCell>(
        &self,
        values: &'a [V],
        out: &mut Vec<Released<'a>>,
        withheld: &mut Vec<ApplyError>,
    ) {
        out.clear();
        for c in &self.columns {
            let cell = values.get(c.index).map_or(Cell::Missing, V::as_cell);
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

fn holds<V: AsCell>(c: &Compiled, values: &[V]) -> bool {
    let kind = |i: &usize| values.get(*i).map_or(Cell::Missing, V::as_cell);
    match c {
        Compiled::In(i, set) => match kind(i) {
            Cell::Text(s) => set.contains(s),
            Cell::Int(n) => set.contains(&n.to_string()),
            Cell::Set(s) => s.iter().any(|x| set.contains(x)),
            _ => false,
        },
        Compiled::Range(i, lo, hi) => match kind(i) {
            Cell::Int(n) => lo.is_none_or(|l| n >= l) && hi.is_none_or(|h| n <= h),
            _ => false,
        },
        Compiled::Is(i, b) => matches!(kind(i), Cell::Flag(f) if f == *b),
        Compiled::Or(cs) => cs.iter().any(|c| holds(c, values)),
    }
}
