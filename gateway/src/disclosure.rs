//! Statistical disclosure control for outputs: small-cell suppression (primary and secondary),
//! NHS-style rounding for health-derived cells, and k-anonymity for record-level extracts.
//!
//! Pure functions over counts and values already in memory: this module never does I/O, never
//! logs, and never puts a count or a field value into an error message (rows are referred to by
//! number, columns by index).
//!
//! # Aggregate tables
//!
//! [`protect_table`] treats a table of person counts together with its margins as one
//! *augmented* table: the row totals, the column totals and the grand total are cells too, and
//! every published line (a row, a column, the row of column totals, the column of row totals)
//! is an equation "the cells sum to the total".
//!
//! 1. **Primary suppression**: every entry (inner cell *or* total) in `1..min_cell` is
//!    suppressed. Zero is shown as `0` (a structural zero is not suppressed).
//! 2. **Secondary (complementary) suppression**, audit-driven, to a fixed point: an attacker is
//!    assumed to know every shown entry exactly, that zeros are shown, and - stronger than a
//!    real reader - which suppressed entries are primary (value in `1..=min_cell-1`) and which
//!    are complements (value `>= min_cell`). [`audit`] decides *exactly*, for that attacker,
//!    whether a suppressed entry's value is pinned to a single integer: the constraint matrix
//!    of an augmented two-way table is a bipartite incidence matrix (totally unimodular), so
//!    the values a suppressed entry can take form an integer interval, and a second value
//!    exists iff there is a cycle through the entry, alternating +1/-1, along suppressed
//!    entries that each have room to move. While some entry is pinned, the smallest shown
//!    non-zero entry on its row or column (inner cells before totals) whose suppression frees
//!    it is suppressed as a complement (else the smallest one, and the audit runs again).
//!    This subsumes the classic rule "every line with a suppressed cell has zero or at least
//!    two", and also catches what that rule misses (a row `1*, 1*` with total `2`; a row
//!    whose only non-zero cell is small, where the total itself must go).
//! 3. **Health rule** (NHS Digital HES/ECDS since 2018): as above, and then every shown entry,
//!    totals included, is rounded to the nearest 5 (`*` for suppressed cells is the caller's
//!    rendering of [`Cell::Suppressed`]). NHS Digital applies rounding *without* secondary
//!    suppression; we keep secondary suppression because rounding alone can leak: a 2x2 table
//!    of four 7s (all suppressed under `min_cell = 8`) has rounded row and column totals 15 and
//!    rounded grand total 30, so the true grand total is at least 28 while each cell is at most
//!    7: every cell is recovered exactly. Rounded values reveal less than exact ones, so the
//!    exact-value audit is conservative for rounded output.
//!
//! ## Limits (stated, not hidden)
//!
//! - Protection is "not pinned to one value", not a protection *interval*: the audit does not
//!   guarantee that a suppressed cell's feasible range is wide (a cell may be known to be 6 or
//!   7). Required-width protection levels (tau-argus style) are not implemented.
//! - Only one table is considered. Differencing across releases (two tables sharing a margin,
//!   overlapping geographies or time windows, "total minus one category") is not prevented
//!   here: [`crate::release::differencing`] compares each new table's counted record versions
//!   with the earlier tables of its dataset (any agreement, purpose or analyst), refuses one
//!   that differs by `1..min_cell` (the smaller of the two purposes') and flags one counting the
//!   same records by other fields.
//! - With `min_cell = 2` a suppressed `1` is known from the threshold alone; such entries are
//!   skipped by the audit (nothing can protect them). Use `min_cell >= 3`.
//! - Only two-way tables. An n-way table flattened to rows x columns is protected for those
//!   two margins only; sub-totals over other dimensions must not be published alongside.
//!
//! # Record extracts
//!
//! [`k_anonymity`] keeps a row only if its combination of quasi-identifier values occurs at
//! least `k` times in the extract; the rest are suppressed (dropped) and counted.

use crate::policy::isa::Disclosure;
use std::collections::{HashMap, VecDeque};

/// Disclosure control settings for one purpose (mirrors [`Disclosure`] without the
/// quasi-identifier names, which the caller resolves to column indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Entries `1..min_cell` (that is `1..=min_cell-1`) are suppressed. `0` and `1` suppress
    /// nothing.
    pub min_cell: u64,
    /// NHS rule for health-derived cells: shown entries (totals too) are rounded to the nearest
    /// 5. With `min_cell = 8` this is the NHS Digital "1-7 → `*`, others to nearest 5" rule.
    pub health_rule: bool,
    /// The k of k-anonymity for record extracts.
    pub k: u64,
}

impl Default for Settings {
    /// The partnership defaults: cells 1-9 suppressed, no rounding, k = 5.
    fn default() -> Self {
        Settings {
            min_cell: 10,
            health_rule: false,
            k: 5,
        }
    }
}

impl From<&Disclosure> for Settings {
    fn from(d: &Disclosure) -> Self {
        Settings {
            min_cell: d.min_cell,
            health_rule: d.health_rule,
            k: d.k,
        }
    }
}

/// A two-way table of person counts: `cells[row][col]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Row labels (categories, not personal data).
    pub rows: Vec<String>,
    /// Column labels.
    pub cols: Vec<String>,
    /// Counts, one inner vector per row, each of `cols.len()` entries.
    pub cells: Vec<Vec<u64>>,
}

/// One published entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// The published count (rounded to 5 under the health rule).
    Count(u64),
    /// Withheld (rendered `c` or `*`).
    Suppressed,
}

/// A table ready for release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protected {
    /// Row labels, as given.
    pub rows: Vec<String>,
    /// Column labels, as given.
    pub cols: Vec<String>,
    /// Published inner cells.
    pub cells: Vec<Vec<Cell>>,
    /// Published row totals (true totals of the original counts, or suppressed).
    pub row_totals: Vec<Cell>,
    /// Published column totals.
    pub col_totals: Vec<Cell>,
    /// Published grand total.
    pub grand_total: Cell,
    /// Entries (inner cells and totals) suppressed because they were in `1..min_cell`.
    pub suppressed_primary: u64,
    /// Entries (inner cells and totals) suppressed as complements.
    pub suppressed_secondary: u64,
    /// Whether shown entries were rounded to the nearest 5 (health rule).
    pub rounded: bool,
}

/// Why disclosure control could not produce an output. Every variant fails closed: nothing is
/// released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisclosureError {
    /// A row of the table has a different number of cells from the column labels.
    #[error(
        "table row {row} has {found} cells but there are {expected} column labels; \
         the aggregation produced a ragged table"
    )]
    RaggedTable {
        /// Row number (0-based).
        row: usize,
        /// Number of column labels.
        expected: usize,
        /// Number of cells in that row.
        found: usize,
    },
    /// The number of row labels differs from the number of rows.
    #[error("table has {found} rows but {expected} row labels")]
    RowLabels {
        /// Number of row labels.
        expected: usize,
        /// Number of rows.
        found: usize,
    },
    /// A total does not fit in 64 bits.
    #[error("table totals overflow 64 bits; the counts cannot be person counts")]
    Overflow,
    /// Secondary suppression found a pinned entry and no entry left to suppress: a tiny table
    /// whose every entry, totals included, is small (two rows of 1 in one column, say) has no
    /// protection; it is refused rather than released.
    #[error(
        "secondary suppression could not protect entry at row {row}, column {col} \
         (row/column index past the end = total); refusing to release the table"
    )]
    Unprotectable {
        /// Augmented row index (`rows.len()` = the column-totals row).
        row: usize,
        /// Augmented column index (`cols.len()` = the row-totals column).
        col: usize,
    },
    /// `k` must be at least 1.
    #[error("k-anonymity needs k >= 1; check the purpose's disclosure.k")]
    ZeroK,
    /// A quasi-identifier index is past the end of a record.
    #[error(
        "record {row} has {len} fields but quasi-identifier column {column} was requested; \
         the extract and the purpose's quasi_identifiers disagree"
    )]
    QuasiIdentifierOutOfRange {
        /// Record number (0-based).
        row: usize,
        /// Fields in that record.
        len: usize,
        /// The requested column index.
        column: usize,
    },
}

/// Apply primary suppression, secondary suppression and (health rule) rounding to `table`.
pub fn protect_table(table: &Table, settings: &Settings) -> Result<Protected, DisclosureError> {
    let aug = Augmented::new(table)?;
    let m = settings.min_cell;
    let mut state: Vec<Vec<Mark>> = aug
        .values
        .iter()
        .map(|row| {
            row.iter()
                .map(|&v| {
                    if v >= 1 && v < m {
                        Mark::Primary
                    } else {
                        Mark::Shown
                    }
                })
                .collect()
        })
        .collect();
    secondary_suppression(&aug, m, &mut state)?;

    let mut primary = 0;
    let mut secondary = 0;
    let publish = |v: u64, mark: Mark| match mark {
        Mark::Shown if settings.health_rule => Cell::Count(round_to_5(v)),
        Mark::Shown => Cell::Count(v),
        Mark::Primary | Mark::Secondary => Cell::Suppressed,
    };
    let mut out = vec![vec![Cell::Suppressed; aug.cols + 1]; aug.rows + 1];
    for (i, row) in state.iter().enumerate() {
        for (j, &mark) in row.iter().enumerate() {
            match mark {
                Mark::Primary => primary += 1,
                Mark::Secondary => secondary += 1,
                Mark::Shown => {}
            }
            out[i][j] = publish(aug.values[i][j], mark);
        }
    }
    let (r, c) = (aug.rows, aug.cols);
    Ok(Protected {
        rows: table.rows.clone(),
        cols: table.cols.clone(),
        cells: out[..r].iter().map(|row| row[..c].to_vec()).collect(),
        row_totals: out[..r].iter().map(|row| row[c]).collect(),
        col_totals: out[r][..c].to_vec(),
        grand_total: out[r][c],
        suppressed_primary: primary,
        suppressed_secondary: secondary,
        rounded: settings.health_rule,
    })
}

/// Round to the nearest multiple of 5, halves up (`12 → 10`, `13 → 15`, `8 → 10`).
pub fn round_to_5(n: u64) -> u64 {
    n.saturating_add(2) / 5 * 5
}

/// The entries of the augmented table (inner cells, then the totals column and row) whose
/// value a reader of `protected` can pin to one integer, given the true `table` it was made
/// from and `min_cell`. Empty means the release passes the audit. Indices are augmented:
/// `(rows.len(), j)` is column total `j`, `(i, cols.len())` is row total `i`.
///
/// Exact for the attacker described in the module documentation; treats shown entries as
/// exact even when they were rounded (conservative).
pub fn audit(
    table: &Table,
    protected: &Protected,
    min_cell: u64,
) -> Result<Vec<(usize, usize)>, DisclosureError> {
    let aug = Augmented::new(table)?;
    let (r, c) = (aug.rows, aug.cols);
    let mut state = vec![vec![Mark::Shown; c + 1]; r + 1];
    for (i, row) in state.iter_mut().enumerate() {
        for (j, mark) in row.iter_mut().enumerate() {
            let published = match (i < r, j < c) {
                (true, true) => protected.cells[i][j],
                (true, false) => protected.row_totals[i],
                (false, true) => protected.col_totals[j],
                (false, false) => protected.grand_total,
            };
            if published == Cell::Suppressed {
                let v = aug.values[i][j];
                *mark = if v >= 1 && v < min_cell {
                    Mark::Primary
                } else {
                    Mark::Secondary
                };
            }
        }
    }
    let mut pinned = Vec::new();
    for i in 0..=r {
        for j in 0..=c {
            if state[i][j] != Mark::Shown && aug.is_pinned(&state, min_cell, i, j) {
                pinned.push((i, j));
            }
        }
    }
    Ok(pinned)
}

/// The outcome of k-anonymity on a record extract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KResult {
    /// One flag per input row: `true` = release, `false` = suppressed.
    pub keep: Vec<bool>,
    /// Rows suppressed because their class had fewer than k rows (for the manifest).
    pub suppressed_rows: u64,
    /// Equivalence classes (distinct quasi-identifier combinations) in the input.
    pub classes: u64,
    /// Classes suppressed.
    pub suppressed_classes: u64,
    /// Size of the smallest released class; 0 when nothing is released.
    pub smallest_kept_class: u64,
}

/// k-anonymity on the quasi-identifier columns `qi` (indices into each record): a row is
/// kept iff at least `k` rows share its quasi-identifier values. A missing value (`None`) is a
/// value of its own. With no quasi-identifiers all rows form one class.
pub fn k_anonymity(
    rows: &[Vec<Option<String>>],
    qi: &[usize],
    k: u64,
) -> Result<KResult, DisclosureError> {
    if k == 0 {
        return Err(DisclosureError::ZeroK);
    }
    let mut keys: Vec<Vec<Option<&str>>> = Vec::with_capacity(rows.len());
    for (n, row) in rows.iter().enumerate() {
        let key = qi
            .iter()
            .map(|&col| {
                row.get(col).map(Option::as_deref).ok_or(
                    DisclosureError::QuasiIdentifierOutOfRange {
                        row: n,
                        len: row.len(),
                        column: col,
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        keys.push(key);
    }
    let mut sizes: HashMap<&[Option<&str>], u64> = HashMap::new();
    for key in &keys {
        *sizes.entry(key.as_slice()).or_insert(0) += 1;
    }
    let keep: Vec<bool> = keys.iter().map(|key| sizes[key.as_slice()] >= k).collect();
    let suppressed_rows = keep.iter().filter(|kept| !**kept).count() as u64;
    let suppressed_classes = sizes.values().filter(|&&s| s < k).count() as u64;
    let smallest_kept_class = sizes
        .values()
        .copied()
        .filter(|&s| s >= k)
        .min()
        .unwrap_or(0);
    Ok(KResult {
        keep,
        suppressed_rows,
        classes: sizes.len() as u64,
        suppressed_classes,
        smallest_kept_class,
    })
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Shown,
    Primary,
    Secondary,
}

/// The table with its margins: `values[rows][j]` are column totals, `values[i][cols]` row
/// totals, `values[rows][cols]` the grand total.
struct Augmented {
    rows: usize,
    cols: usize,
    values: Vec<Vec<u64>>,
}

impl Augmented {
    fn new(table: &Table) -> Result<Self, DisclosureError> {
        let (r, c) = (table.cells.len(), table.cols.len());
        if table.rows.len() != r {
            return Err(DisclosureError::RowLabels {
                expected: table.rows.len(),
                found: r,
            });
        }
        let mut values = vec![vec![0u64; c + 1]; r + 1];
        for (i, row) in table.cells.iter().enumerate() {
            if row.len() != c {
                return Err(DisclosureError::RaggedTable {
                    row: i,
                    expected: c,
                    found: row.len(),
                });
            }
            for (j, &v) in row.iter().enumerate() {
                values[i][j] = v;
                values[i][c] = values[i][c]
                    .checked_add(v)
                    .ok_or(DisclosureError::Overflow)?;
                values[r][j] = values[r][j]
                    .checked_add(v)
                    .ok_or(DisclosureError::Overflow)?;
                values[r][c] = values[r][c]
                    .checked_add(v)
                    .ok_or(DisclosureError::Overflow)?;
            }
        }
        Ok(Augmented {
            rows: r,
            cols: c,
            values,
        })
    }

    /// The attacker's bounds for a suppressed entry: primary `[1, m-1]`, complement `[m, ∞)`.
    fn bounds(mark: Mark, m: u64) -> (u64, u64) {
        match mark {
            Mark::Primary => (1, m.saturating_sub(1)),
            Mark::Secondary | Mark::Shown => (m.max(1), u64::MAX),
        }
    }

    /// Whether suppressed entry `(i, j)` has only one feasible value. See the module docs: a
    /// second value exists iff an alternating cycle of ±1 moves passes through it.
    ///
    /// Graph: nodes `0..=rows` are the row equations (`rows` = the column-totals row),
    /// `rows+1..=rows+1+cols` the column equations (last = the row-totals column). Entry
    /// `(i, j)` is an edge between row node `i` and column node `j`. Totals enter their
    /// equations with the opposite sign to cells, so a move `δ` on a total (but not on the
    /// grand total, which is negated twice) is a move `-δ` on its edge.
    fn is_pinned(&self, state: &[Vec<Mark>], m: u64, i: usize, j: usize) -> bool {
        let (lo, hi) = Self::bounds(state[i][j], m);
        if lo == hi {
            // Known from the threshold alone; nothing can protect it (min_cell = 2).
            return false;
        }
        let x = self.values[i][j];
        let sign = self.sign(i, j);
        [1i8, -1].iter().all(|&delta| {
            let room = if delta > 0 { x < hi } else { x > lo };
            if !room {
                return true;
            }
            // Edge direction for this entry: +1 (after sign) goes row → col.
            let (from, to) = if delta * sign > 0 {
                (self.col_node(j), self.row_node(i))
            } else {
                (self.row_node(i), self.col_node(j))
            };
            // The rest of the cycle must lead from `from` back to `to` without this entry.
            !self.path_exists(state, m, from, to, (i, j))
        })
    }

    fn sign(&self, i: usize, j: usize) -> i8 {
        if (i == self.rows) == (j == self.cols) {
            1
        } else {
            -1
        }
    }

    fn row_node(&self, i: usize) -> usize {
        i
    }

    fn col_node(&self, j: usize) -> usize {
        self.rows + 1 + j
    }

    fn path_exists(
        &self,
        state: &[Vec<Mark>],
        m: u64,
        from: usize,
        to: usize,
        skip: (usize, usize),
    ) -> bool {
        let nodes = self.rows + self.cols + 2;
        let mut seen = vec![false; nodes];
        let mut queue = VecDeque::from([from]);
        seen[from] = true;
        while let Some(node) = queue.pop_front() {
            if node == to {
                return true;
            }
            // Edges incident to `node`: a row node touches entries (node, 0..=cols); a column
            // node touches entries (0..=rows, node-rows-1).
            let incident: Vec<(usize, usize, usize)> = if node <= self.rows {
                (0..=self.cols)
                    .map(|j| (node, j, self.col_node(j)))
                    .collect()
            } else {
                let j = node - self.rows - 1;
                (0..=self.rows).map(|i| (i, j, self.row_node(i))).collect()
            };
            for (i, j, next) in incident {
                if (i, j) == skip || state[i][j] == Mark::Shown || seen[next] {
                    continue;
                }
                let (lo, hi) = Self::bounds(state[i][j], m);
                let x = self.values[i][j];
                // Traversing row → col is edge move +1; col → row is -1. Actual move on the
                // entry is that times its sign.
                let edge_move: i8 = if node <= self.rows { 1 } else { -1 };
                let actual = edge_move * self.sign(i, j);
                let room = if actual > 0 { x < hi } else { x > lo };
                if room {
                    seen[next] = true;
                    queue.push_back(next);
                }
            }
        }
        false
    }
}

/// Add complements until no suppressed entry is pinned.
fn secondary_suppression(
    aug: &Augmented,
    m: u64,
    state: &mut [Vec<Mark>],
) -> Result<(), DisclosureError> {
    let (r, c) = (aug.rows, aug.cols);
    loop {
        let mut pinned = None;
        'find: for i in 0..=r {
            for j in 0..=c {
                if state[i][j] != Mark::Shown && aug.is_pinned(state, m, i, j) {
                    pinned = Some((i, j));
                    break 'find;
                }
            }
        }
        let Some((i, j)) = pinned else {
            return Ok(());
        };
        // Candidates: shown non-zero entries, those on the same row or column first, then
        // inner cells before totals, then smaller values, then position (deterministic).
        let mut candidates: Vec<(usize, usize)> = (0..=r)
            .flat_map(|ii| (0..=c).map(move |jj| (ii, jj)))
            .filter(|&(ii, jj)| state[ii][jj] == Mark::Shown && aug.values[ii][jj] > 0)
            .collect();
        candidates.sort_by_key(|&(ii, jj)| {
            (
                ii != i && jj != j,
                ii == r || jj == c,
                aug.values[ii][jj],
                ii,
                jj,
            )
        });
        let Some(&first) = candidates.first() else {
            return Err(DisclosureError::Unprotectable { row: i, col: j });
        };
        let chosen = candidates
            .iter()
            .copied()
            .find(|&(ii, jj)| {
                state[ii][jj] = Mark::Secondary;
                let freed = !aug.is_pinned(state, m, i, j);
                state[ii][jj] = Mark::Shown;
                freed
            })
            .unwrap_or(first);
        state[chosen.0][chosen.1] = Mark::Secondary;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(cells: Vec<Vec<u64>>) -> Table {
        Table {
            rows: (0..cells.len()).map(|i| format!("r{i}")).collect(),
            cols: (0..cells.first().map_or(0, Vec::len))
                .map(|j| format!("c{j}"))
                .collect(),
            cells,
        }
    }

    /// The protected table, or `None` when it is refused as unprotectable, which is allowed
    /// only for a table holding a small cell (a table with none needs no suppression).
    fn protected_or_refused(
        t: &Table,
        s: &Settings,
    ) -> Result<Option<Protected>, proptest::test_runner::TestCaseError> {
        match protect_table(t, s) {
            Ok(p) => Ok(Some(p)),
            Err(DisclosureError::Unprotectable { .. }) => {
                let small = t.cells.iter().flatten().any(|v| *v > 0 && *v < s.min_cell);
                proptest::prop_assert!(small, "refused a table with no small cell: {:?}", t.cells);
                Ok(None)
            }
            Err(e) => Err(proptest::test_runner::TestCaseError::fail(e.to_string())),
        }
    }

    #[test]
    fn a_table_whose_every_entry_is_small_is_refused_not_released() {
        // One column, two rows of 1: each row total equals its cell and the grand total is 2,
        // so no suppression pattern hides the cells.
        let t = table(vec![vec![1], vec![1]]);
        assert!(matches!(
            protect_table(&t, &settings(3, false)),
            Err(DisclosureError::Unprotectable { .. })
        ));
    }

    fn settings(min_cell: u64, health_rule: bool) -> Settings {
        Settings {
            min_cell,
            health_rule,
            k: 5,
        }
    }

    #[test]
    fn primary_threshold_boundaries() {
        let t = table(vec![vec![9, 10, 0, 50, 60], vec![30, 40, 0, 50, 60]]);
        let p = protect_table(&t, &settings(10, false)).unwrap();
        assert_eq!(p.cells[0][0], Cell::Suppressed, "9 < 10 is suppressed");
        assert_eq!(p.cells[0][2], Cell::Count(0), "zero is shown");
        assert_eq!(p.cells[1][2], Cell::Count(0), "zero is shown");
        assert_eq!(p.col_totals[2], Cell::Count(0), "zero total is shown");
        assert_eq!(p.suppressed_primary, 1, "only the 9 is primary");
        assert!(
            p.suppressed_secondary >= 3,
            "a lone small cell needs a rectangle of complements"
        );
        assert!(audit(&t, &p, 10).unwrap().is_empty());

        let t = table(vec![vec![10, 0], vec![20, 30]]);
        let p = protect_table(&t, &settings(10, false)).unwrap();
        assert_eq!(
            p.cells,
            vec![
                vec![Cell::Count(10), Cell::Count(0)],
                vec![Cell::Count(20), Cell::Count(30)]
            ]
        );
        assert_eq!((p.suppressed_primary, p.suppressed_secondary), (0, 0));
        assert_eq!(p.row_totals, vec![Cell::Count(10), Cell::Count(50)]);
        assert_eq!(p.grand_total, Cell::Count(60));
    }

    #[test]
    fn min_cell_is_configurable() {
        let t = table(vec![vec![4, 5, 100], vec![40, 50, 100]]);
        let p = protect_table(&t, &settings(5, false)).unwrap();
        assert_eq!(p.cells[0][0], Cell::Suppressed);
        assert_eq!(
            p.cells[0][1],
            Cell::Suppressed,
            "smallest complement in the row"
        );
        assert_eq!(p.suppressed_primary, 1);
        assert!(audit(&t, &p, 5).unwrap().is_empty());
        let p = protect_table(&t, &settings(4, false)).unwrap();
        assert_eq!(p.cells[0][0], Cell::Count(4));
        assert_eq!(p.suppressed_primary + p.suppressed_secondary, 0);
    }

    #[test]
    fn nhs_rule_suppresses_1_to_7_and_rounds_the_rest() {
        let t = table(vec![
            vec![7, 8, 12, 13, 0, 100],
            vec![20, 20, 20, 20, 0, 20],
        ]);
        let p = protect_table(&t, &settings(8, true)).unwrap();
        assert!(p.rounded);
        assert_eq!(p.cells[0][0], Cell::Suppressed, "7 → *");
        assert_eq!(p.suppressed_primary, 1);
        assert!(p.suppressed_secondary >= 1);
        assert_eq!(p.cells[0][4], Cell::Count(0), "0 → 0");
        for (i, row) in t.cells.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if let Cell::Count(shown) = p.cells[i][j] {
                    assert_eq!(shown, round_to_5(v), "cell {i},{j}");
                }
            }
        }
        assert!(audit(&t, &p, 8).unwrap().is_empty());

        // Nothing small: every entry shown, rounded, totals from the true counts.
        let t = table(vec![vec![8, 12], vec![13, 100]]);
        let p = protect_table(&t, &settings(8, true)).unwrap();
        assert_eq!(
            p.cells,
            vec![
                vec![Cell::Count(10), Cell::Count(10)],
                vec![Cell::Count(15), Cell::Count(100)]
            ],
            "8 → 10, 12 → 10, 13 → 15"
        );
        assert_eq!(p.row_totals, vec![Cell::Count(20), Cell::Count(115)]);
        assert_eq!(p.col_totals, vec![Cell::Count(20), Cell::Count(110)]);
        assert_eq!(p.grand_total, Cell::Count(135));
    }

    #[test]
    fn rounding_boundaries() {
        assert_eq!(round_to_5(8), 10);
        assert_eq!(round_to_5(12), 10);
        assert_eq!(round_to_5(13), 15);
        assert_eq!(round_to_5(0), 0);
        assert_eq!(round_to_5(2), 0);
        assert_eq!(round_to_5(3), 5);
        assert_eq!(round_to_5(u64::MAX), u64::MAX / 5 * 5);
    }

    #[test]
    fn health_rule_8_rounds_to_10_when_shown() {
        let t = table(vec![vec![8, 40], vec![40, 40]]);
        let p = protect_table(&t, &settings(8, true)).unwrap();
        assert_eq!(p.cells[0][0], Cell::Count(10));
        assert_eq!(p.grand_total, Cell::Count(130));
    }

    #[test]
    fn two_small_cells_summing_to_a_known_total_are_protected() {
        // The "≥2 per line" rule alone would publish 1*, 1* with total 2: both recovered.
        let t = table(vec![vec![1, 1, 0], vec![20, 30, 40]]);
        let p = protect_table(&t, &settings(10, false)).unwrap();
        assert!(audit(&t, &p, 10).unwrap().is_empty());
        assert_eq!(
            p.row_totals[0],
            Cell::Suppressed,
            "total 2 is itself a small count"
        );
    }

    #[test]
    fn the_2x2_of_sevens_is_not_recovered_under_the_health_rule() {
        let t = table(vec![vec![7, 7], vec![7, 7]]);
        let p = protect_table(&t, &settings(8, true)).unwrap();
        assert!(audit(&t, &p, 8).unwrap().is_empty());
        // Brute force on the rounded publication: the cell must not be pinned.
        assert!(p.grand_total == Cell::Suppressed || p.row_totals.contains(&Cell::Suppressed));
    }

    #[test]
    fn single_small_cell_in_a_line_of_zeros_suppresses_totals() {
        let t = table(vec![vec![3, 0, 0]]);
        let p = protect_table(&t, &settings(10, false)).unwrap();
        assert_eq!(p.cells[0][0], Cell::Suppressed);
        assert_eq!(p.row_totals[0], Cell::Suppressed);
        assert_eq!(p.grand_total, Cell::Suppressed);
        assert!(audit(&t, &p, 10).unwrap().is_empty());
    }

    #[test]
    fn audit_flags_a_lone_suppressed_cell() {
        let t = table(vec![vec![3, 50], vec![40, 60]]);
        let naive = Protected {
            rows: t.rows.clone(),
            cols: t.cols.clone(),
            cells: vec![
                vec![Cell::Suppressed, Cell::Count(50)],
                vec![Cell::Count(40), Cell::Count(60)],
            ],
            row_totals: vec![Cell::Count(53), Cell::Count(100)],
            col_totals: vec![Cell::Count(43), Cell::Count(110)],
            grand_total: Cell::Count(153),
            suppressed_primary: 1,
            suppressed_secondary: 0,
            rounded: false,
        };
        assert_eq!(audit(&t, &naive, 10).unwrap(), vec![(0, 0)]);
        let p = protect_table(&t, &settings(10, false)).unwrap();
        assert!(audit(&t, &p, 10).unwrap().is_empty());
        assert!(
            p.suppressed_secondary >= 3,
            "a 2x2 with one small cell needs all four"
        );
    }

    #[test]
    fn bad_tables_are_refused() {
        let mut t = table(vec![vec![1, 2], vec![3]]);
        assert_eq!(
            protect_table(&t, &Settings::default()),
            Err(DisclosureError::RaggedTable {
                row: 1,
                expected: 2,
                found: 1
            })
        );
        t.rows.pop();
        assert!(matches!(
            protect_table(&t, &Settings::default()),
            Err(DisclosureError::RowLabels { .. })
        ));
        let t = table(vec![vec![u64::MAX, 1]]);
        assert_eq!(
            protect_table(&t, &Settings::default()),
            Err(DisclosureError::Overflow)
        );
    }

    #[test]
    fn settings_from_isa() {
        let d = Disclosure {
            min_cell: 8,
            health_rule: true,
            k: 3,
            quasi_identifiers: vec![],
        };
        assert_eq!(
            Settings::from(&d),
            Settings {
                min_cell: 8,
                health_rule: true,
                k: 3
            }
        );
        assert_eq!(
            Settings::default(),
            Settings {
                min_cell: 10,
                health_rule: false,
                k: 5
            }
        );
    }

    // ---- Independent brute-force attacker for the property tests ------------------------------

    /// Feasible values of every unknown entry, found by enumerating all assignments of the
    /// unknowns within the attacker's bounds, checking every line equation. Returns, per
    /// unknown, whether at least two values are feasible. The search is restricted to a window
    /// of ±1 around the true values: every value it finds is truly feasible, so "ambiguous" is
    /// never a false pass (and by the conformal-cycle argument the window loses nothing).
    /// `None` when there are too many unknowns to enumerate.
    fn brute_force_ambiguous(
        t: &Table,
        p: &Protected,
        m: u64,
    ) -> Option<Vec<((usize, usize), bool)>> {
        let (r, c) = (t.cells.len(), t.cols.len());
        let aug = Augmented::new(t).unwrap();
        // Published entries of the augmented table; None = unknown.
        let mut known = vec![vec![None; c + 1]; r + 1];
        let mut unknowns = Vec::new();
        #[allow(clippy::needless_range_loop)]
        for i in 0..=r {
            for j in 0..=c {
                let published = match (i < r, j < c) {
                    (true, true) => p.cells[i][j],
                    (true, false) => p.row_totals[i],
                    (false, true) => p.col_totals[j],
                    (false, false) => p.grand_total,
                };
                match published {
                    Cell::Count(v) => known[i][j] = Some(v),
                    Cell::Suppressed => {
                        let v = aug.values[i][j];
                        let (lo, hi) = if v < m { (1, m - 1) } else { (m, u64::MAX) };
                        unknowns.push(((i, j), lo.max(v.saturating_sub(1)), hi.min(v + 1)));
                    }
                }
            }
        }
        if unknowns.len() > 12 {
            return None;
        }
        let mut seen: Vec<Vec<u64>> = vec![Vec::new(); unknowns.len()];
        let mut assign = vec![0u64; unknowns.len()];
        fn check(
            known: &[Vec<Option<u64>>],
            unknowns: &[((usize, usize), u64, u64)],
            assign: &[u64],
            r: usize,
            c: usize,
        ) -> bool {
            let mut v: Vec<Vec<u64>> = known
                .iter()
                .map(|row| row.iter().map(|x| x.unwrap_or(0)).collect())
                .collect();
            for (n, ((i, j), _, _)) in unknowns.iter().enumerate() {
                v[*i][*j] = assign[n];
            }
            (0..=r).all(|i| (0..c).map(|j| v[i][j]).sum::<u64>() == v[i][c])
                && (0..=c).all(|j| (0..r).map(|i| v[i][j]).sum::<u64>() == v[r][j])
        }
        fn go(
            n: usize,
            known: &[Vec<Option<u64>>],
            unknowns: &[((usize, usize), u64, u64)],
            assign: &mut Vec<u64>,
            seen: &mut Vec<Vec<u64>>,
            r: usize,
            c: usize,
        ) {
            if n == unknowns.len() {
                if check(known, unknowns, assign, r, c) {
                    for (k, &v) in assign.iter().enumerate() {
                        if !seen[k].contains(&v) && seen[k].len() < 2 {
                            seen[k].push(v);
                        }
                    }
                }
                return;
            }
            let (_, lo, hi) = unknowns[n];
            for v in lo..=hi {
                assign[n] = v;
                go(n + 1, known, unknowns, assign, seen, r, c);
            }
        }
        go(0, &known, &unknowns, &mut assign, &mut seen, r, c);
        Some(
            unknowns
                .iter()
                .zip(seen)
                .map(|((pos, _, _), s)| (*pos, s.len() >= 2))
                .collect(),
        )
    }

    /// No line (row or column equation of the augmented table) has exactly one unknown.
    fn no_line_with_one_unknown(p: &Protected) -> bool {
        let (r, c) = (p.cells.len(), p.col_totals.len());
        let entry = |i: usize, j: usize| match (i < r, j < c) {
            (true, true) => p.cells[i][j],
            (true, false) => p.row_totals[i],
            (false, true) => p.col_totals[j],
            (false, false) => p.grand_total,
        };
        let rows_ok =
            (0..=r).all(|i| (0..=c).filter(|&j| entry(i, j) == Cell::Suppressed).count() != 1);
        let cols_ok =
            (0..=c).all(|j| (0..=r).filter(|&i| entry(i, j) == Cell::Suppressed).count() != 1);
        rows_ok && cols_ok
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Small tables (values 0-30, up to 4x4; the brute force enumerates every assignment
        /// of up to 12 unknowns): every suppressed entry has at least two feasible values.
        #[test]
        fn no_suppressed_entry_is_recoverable_brute_force(
            (r, c, vals) in (1usize..=4, 1usize..=4)
                .prop_flat_map(|(r, c)| (Just(r), Just(c), proptest::collection::vec(0u64..=30, r * c))),
            m in prop_oneof![Just(5u64), Just(10u64)],
        ) {
            let t = table(vals.chunks(c).map(<[u64]>::to_vec).collect());
            prop_assert_eq!(t.cells.len(), r);
            // A table with no protection is refused (fail closed), never released.
            let Some(p) = protected_or_refused(&t, &settings(m, false))? else {
                return Ok(());
            };
            prop_assert!(no_line_with_one_unknown(&p));
            prop_assert!(audit(&t, &p, m).unwrap().is_empty());
            for (pos, ambiguous) in brute_force_ambiguous(&t, &p, m).unwrap_or_default() {
                prop_assert!(ambiguous, "entry {:?} recoverable in {:?} -> {:?}", pos, t.cells, p);
            }
        }

        /// Up to 4x4 tables, values 0-30: primary cells suppressed, zeros and shown values exact,
        /// no line with a single unknown, and the exact audit passes.
        #[test]
        fn protection_invariants_4x4(
            (c, vals) in (1usize..=4, 1usize..=4)
                .prop_flat_map(|(r, c)| (Just(c), proptest::collection::vec(0u64..=30, r * c))),
            m in 3u64..=12,
            health in any::<bool>(),
        ) {
            let t = table(vals.chunks(c).map(<[u64]>::to_vec).collect());
            let Some(p) = protected_or_refused(&t, &settings(m, health))? else {
                return Ok(());
            };
            for (i, row) in t.cells.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    match p.cells[i][j] {
                        Cell::Suppressed => prop_assert!(v > 0, "zero suppressed"),
                        Cell::Count(shown) => {
                            prop_assert!(v == 0 || v >= m, "small cell shown");
                            let expect = if health { round_to_5(v) } else { v };
                            prop_assert_eq!(shown, expect);
                        }
                    }
                }
            }
            prop_assert!(no_line_with_one_unknown(&p));
            prop_assert!(audit(&t, &p, m).unwrap().is_empty());
        }

        #[test]
        fn k_anonymity_properties(
            rows in proptest::collection::vec(
                proptest::collection::vec(proptest::option::of(0u8..3), 3), 0..40),
            k in 1u64..6,
        ) {
            let rows: Vec<Vec<Option<String>>> = rows
                .into_iter()
                .map(|r| r.into_iter().map(|v| v.map(|v| v.to_string())).collect())
                .collect();
            let qi = [0usize, 2];
            let res = k_anonymity(&rows, &qi, k).unwrap();
            let class = |r: &Vec<Option<String>>| (r[0].clone(), r[2].clone());
            for (n, row) in rows.iter().enumerate() {
                let size = rows.iter().filter(|o| class(o) == class(row)).count() as u64;
                prop_assert_eq!(res.keep[n], size >= k);
            }
            let kept: Vec<_> = rows.iter().zip(&res.keep).filter(|(_, k)| **k).map(|(r, _)| r).collect();
            for row in &kept {
                prop_assert!(kept.iter().filter(|o| class(o) == class(row)).count() as u64 >= k);
            }
            prop_assert_eq!(res.suppressed_rows, (rows.len() - kept.len()) as u64);
            let mut classes: Vec<_> = rows.iter().map(class).collect();
            classes.sort();
            classes.dedup();
            prop_assert_eq!(res.classes, classes.len() as u64);
            if kept.is_empty() {
                prop_assert_eq!(res.smallest_kept_class, 0);
            } else {
                prop_assert!(res.smallest_kept_class >= k);
            }
        }
    }

    #[test]
    fn k_anonymity_example_and_errors() {
        let s = |v: &str| Some(v.to_string());
        let rows = vec![
            vec![s("F"), s("18-24"), s("x")],
            vec![s("F"), s("18-24"), s("y")],
            vec![s("M"), s("18-24"), s("z")],
            vec![s("F"), s("18-24"), None],
            vec![None, s("18-24"), s("w")],
        ];
        let res = k_anonymity(&rows, &[0, 1], 3).unwrap();
        assert_eq!(res.keep, vec![true, true, false, true, false]);
        assert_eq!(res.suppressed_rows, 2);
        assert_eq!(res.classes, 3);
        assert_eq!(res.suppressed_classes, 2);
        assert_eq!(res.smallest_kept_class, 3);
        // The non-QI column does not split classes; k = 4 suppresses everything.
        let res = k_anonymity(&rows, &[0, 1], 4).unwrap();
        assert_eq!(res.keep, vec![false; 5]);
        assert_eq!(res.smallest_kept_class, 0);
        assert_eq!(k_anonymity(&rows, &[0], 0), Err(DisclosureError::ZeroK));
        assert_eq!(
            k_anonymity(&rows, &[5], 1),
            Err(DisclosureError::QuasiIdentifierOutOfRange {
                row: 0,
                len: 3,
                column: 5
            })
        );
        assert_eq!(k_anonymity(&[], &[0], 5).unwrap().classes, 0);
    }
}
