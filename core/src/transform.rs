//! Transforms: the named, pure functions that turn one stored cell into the text released to an
//! analyst (`month`, `age_band_sv`, `ward`, `ethnicity_5`, `offence_group`, `round5`, …).
//!
//! An ISA file names a transform per field; the policy engine parses the name with
//! [`Transform::parse`], checks at load time that it fits the field ([`Transform::applies_to_field`]),
//! checks a request asks for nothing finer than the ISA allows ([`coarser_or_equal`]), and calls
//! [`Transform::apply`] per record per field.
//!
//! This module owns the transform vocabulary, its coarseness order and the lookup tables compiled
//! in from `policies/lookups/` (LSOA → ward → borough, Home Office offence code → ONS group,
//! ethnicity → 5 groups). It never does I/O, never logs, and never puts a cell value in an error:
//! errors name the transform and what it expected, nothing more.
//!
//! Every generalising transform maps a value to a bucket that contains it, is idempotent, and
//! agrees with the transforms it is coarser than: `year(month(d)) == year(d)`. Property tests
//! in `transform/tests.rs` pin all three.

mod age;
mod codes;
mod csv;
mod geo;
mod temporal;

pub use geo::{BOROUGH_CODE, BOROUGH_NAME};

use crate::catalog::{Field, FieldType, suggest};
use sharing_proto::v1 as pb;
use std::borrow::Cow;
use std::fmt;

/// A named generalisation an ISA may apply to a field before release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transform {
    /// Release the value as stored.
    Keep,
    /// Release nothing: the field is withheld.
    Deny,
    /// Release nothing for a free-text field (the ISA's "drop free text unless scrubbed").
    DropFreeText,
    /// Calendar date of a date or datetime: `2024-07-14`.
    Day,
    /// ISO 8601 week: `2024-W07`. The week-numbering year can differ from the calendar year
    /// (2024-12-30 is `2025-W01`), so a week is not nested in a month or a year.
    Week,
    /// Calendar month: `2024-07`.
    Month,
    /// Calendar quarter: `2024-Q3`.
    Quarter,
    /// Calendar year: `2024`.
    Year,
    /// Day of the week, without the date: `Mon` … `Sun`.
    DayOfWeek,
    /// Hour of the day, without the date: `00` … `23`.
    Hour,
    /// Six-hour band of the day, without the date: `00-05`, `06-11`, `12-17`, `18-23`.
    HourBand,
    /// Serious Violence age band: `0-9`, `10-14`, `15-17`, `18-24`, `25-34`, `35-44`, `45-54`,
    /// `55-64`, `65+` (domain research part C).
    AgeBandSv,
    /// Whether the person was under 25 (London VRU serious-violence definition): `true` / `false`.
    Under25Flag,
    /// LSOA 2021 code → ward code (May 2022 boundaries); a ward code stays as it is.
    Ward,
    /// LSOA or ward code → borough code (`E09000021`, Kingston upon Thames).
    Borough,
    /// Ethnicity (ONS 2021 categories, NHS ethnic category letter, police IC code) → `Asian`,
    /// `Black`, `Mixed`, `White`, `Other` or `Not stated`.
    Ethnicity5,
    /// Home Office offence code → ONS offence group (e.g. `8N` → `Violence with injury`).
    OffenceGroup,
    /// Count rounded to the nearest multiple of 5 (SDC default 3, domain research part D).
    Round5,
}

/// What kind of value a transform coarsens. Transforms of different families are never
/// comparable, except that [`Transform::Keep`] is finer and [`Transform::Deny`] coarser than all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `keep`, `deny`, `drop_free_text`: any field.
    Any,
    /// Dates and datetimes: `day`, `week`, `month`, `quarter`, `year`, `day_of_week`.
    Date,
    /// Time of day: `hour`, `hour_band`.
    TimeOfDay,
    /// Ages: `age_band_sv`, `under25_flag`.
    Age,
    /// Areas: `ward`, `borough`.
    Geography,
    /// Ethnicity: `ethnicity_5`.
    Ethnicity,
    /// Offence codes: `offence_group`.
    Offence,
    /// Counts: `round5`.
    Count,
}

/// A stored cell, borrowed: what a transform reads. Build one from a `sharing.v1.Value` with
/// `Cell::from`. Its `Debug` names the kind only, never the value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    /// No value.
    Missing,
    /// Text (also what a transform releases, so transforms can be chained).
    Text(&'a str),
    /// Whole number.
    Int(i64),
    /// `true` / `false`.
    Flag(bool),
    /// `YYYY-MM-DD`.
    Date(&'a str),
    /// `YYYY-MM-DDTHH:MM[:SS]`.
    Datetime(&'a str),
    /// Set items in stored order.
    Set(SetItems<'a>),
}

/// The items of a set cell: decoded strings, or a `sharing.v1.StringSet` still in its wire
/// encoding (read lazily; see [`SetItems::encoded`]). Equal when the items are.
#[derive(Clone, Copy)]
pub struct SetItems<'a>(SetRepr<'a>);

#[derive(Clone, Copy)]
enum SetRepr<'a> {
    Decoded(&'a [String]),
    Encoded(&'a [u8]),
}

impl<'a> SetItems<'a> {
    /// Items already decoded.
    pub fn decoded(items: &'a [String]) -> Self {
        Self(SetRepr::Decoded(items))
    }

    /// The encoded `StringSet` message `bytes`, checked: fails unless every field is
    /// well-formed and every item (field 1) is UTF-8, so iteration later cannot fail.
    pub fn encoded(bytes: &'a [u8]) -> Result<Self, crate::wire::WireError> {
        for f in crate::wire::Fields::new(bytes) {
            let (n, v) = f?;
            if n == 1 {
                v.str()?;
            }
        }
        Ok(Self(SetRepr::Encoded(bytes)))
    }

    /// The items in stored order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let (decoded, encoded): (&'a [String], &'a [u8]) = match self.0 {
            SetRepr::Decoded(d) => (d, &[]),
            SetRepr::Encoded(e) => (&[], e),
        };
        decoded.iter().map(String::as_str).chain(
            crate::wire::Fields::new(encoded)
                .filter_map(|f| f.ok())
                .filter(|(n, _)| *n == 1)
                .filter_map(|(_, v)| v.str().ok()),
        )
    }

    /// The items joined by `sep`.
    pub fn join(&self, sep: &str) -> String {
        let mut out = String::new();
        for (i, item) in self.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(item);
        }
        out
    }
}

impl PartialEq for SetItems<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for SetItems<'_> {}

/// Something a [`Cell`] can be read from: a `sharing.v1.Value` or a cell itself.
pub trait AsCell {
    /// The cell.
    fn as_cell(&self) -> Cell<'_>;
}

impl AsCell for pb::Value {
    fn as_cell(&self) -> Cell<'_> {
        Cell::from(self)
    }
}

impl AsCell for Cell<'_> {
    fn as_cell(&self) -> Cell<'_> {
        *self
    }
}

/// The released cell text, borrowed from the input or a lookup table where possible; `None` when
/// nothing is released (denied, dropped, or missing).
pub type Released<'a> = Option<Cow<'a, str>>;

/// Why a transform could not be applied to a cell. The message never contains the cell's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// The cell's type is not one the transform reads (e.g. `month` on a number).
    #[error(
        "transform \"{}\" cannot read a {got} value; it reads {}; choose a transform for this field's type",
        .transform.name(), .transform.expected_input()
    )]
    WrongType {
        /// The transform.
        transform: Transform,
        /// The kind of cell given: `text`, `int`, `flag`, `date`, `datetime` or `set`.
        got: &'static str,
    },
    /// The cell has a type the transform reads but not a shape it understands (e.g. `month` on a
    /// week, or a date that is not in the calendar).
    #[error(
        "transform \"{}\" cannot read this value; it reads {}",
        .transform.name(), .transform.expected_input()
    )]
    Shape {
        /// The transform.
        transform: Transform,
    },
    /// A number outside the range the transform accepts (an age over 130, an hour over 23).
    #[error("transform \"{}\": value out of range; it reads {}", .transform.name(), .transform.expected_input())]
    OutOfRange {
        /// The transform.
        transform: Transform,
    },
    /// A code the transform's lookup table does not hold.
    #[error(
        "transform \"{}\": code not in the lookup {table}; add it there or deny the field",
        .transform.name()
    )]
    UnknownCode {
        /// The transform.
        transform: Transform,
        /// The lookup file that lacks the code.
        table: &'static str,
    },
}

/// A transform name that is not in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown transform \"{name}\"{hint}; valid transforms: {}", Transform::names().join(", "))]
pub struct UnknownTransform {
    /// The name as written in the policy.
    pub name: String,
    /// ` (did you mean "…"?)`, or empty when nothing is close.
    pub hint: String,
}

impl UnknownTransform {
    /// The nearest valid name, if one is close.
    pub fn nearest(&self) -> Option<&'static str> {
        Transform::ALL
            .iter()
            .map(|t| t.name())
            .find(|n| self.hint.contains(&format!("\"{n}\"")))
    }
}

impl Transform {
    /// Every transform, in vocabulary order.
    pub const ALL: &'static [Transform] = &[
        Self::Keep,
        Self::Deny,
        Self::DropFreeText,
        Self::Day,
        Self::Week,
        Self::Month,
        Self::Quarter,
        Self::Year,
        Self::DayOfWeek,
        Self::Hour,
        Self::HourBand,
        Self::AgeBandSv,
        Self::Under25Flag,
        Self::Ward,
        Self::Borough,
        Self::Ethnicity5,
        Self::OffenceGroup,
        Self::Round5,
    ];

    /// Every transform name, in vocabulary order.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|t| t.name()).collect()
    }

    /// Parses a transform name as written in an ISA file (exact, lower case).
    pub fn parse(name: &str) -> Result<Self, UnknownTransform> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.name() == name)
            .ok_or_else(|| UnknownTransform {
                name: name.to_string(),
                hint: hint_for(name),
            })
    }

    /// The name an ISA file uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Deny => "deny",
            Self::DropFreeText => "drop_free_text",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Quarter => "quarter",
            Self::Year => "year",
            Self::DayOfWeek => "day_of_week",
            Self::Hour => "hour",
            Self::HourBand => "hour_band",
            Self::AgeBandSv => "age_band_sv",
            Self::Under25Flag => "under25_flag",
            Self::Ward => "ward",
            Self::Borough => "borough",
            Self::Ethnicity5 => "ethnicity_5",
            Self::OffenceGroup => "offence_group",
            Self::Round5 => "round5",
        }
    }

    /// The family of values the transform coarsens.
    pub fn family(self) -> Family {
        match self {
            Self::Keep | Self::Deny | Self::DropFreeText => Family::Any,
            Self::Day | Self::Week | Self::Month | Self::Quarter | Self::Year | Self::DayOfWeek => {
                Family::Date
            }
            Self::Hour | Self::HourBand => Family::TimeOfDay,
            Self::AgeBandSv | Self::Under25Flag => Family::Age,
            Self::Ward | Self::Borough => Family::Geography,
            Self::Ethnicity5 => Family::Ethnicity,
            Self::OffenceGroup => Family::Offence,
            Self::Round5 => Family::Count,
        }
    }

    /// Whether the transform never releases anything (`deny`, `drop_free_text`).
    pub fn releases_nothing(self) -> bool {
        matches!(self, Self::Deny | Self::DropFreeText)
    }

    /// Whether the transform can read values of a field type. A type check only: the engine
    /// should call [`Transform::applies_to_field`], which also checks codes and field names.
    /// Direct-identifier types are never sent, so only `deny` applies to them.
    pub fn applies_to(self, ty: &FieldType) -> bool {
        use FieldType as T;
        if ty.is_identifier() {
            return self == Self::Deny;
        }
        match self {
            Self::Keep | Self::Deny => true,
            Self::DropFreeText => *ty == T::Str,
            Self::Day | Self::Week | Self::Month | Self::Quarter | Self::Year | Self::DayOfWeek => {
                matches!(ty, T::Date | T::Datetime)
            }
            Self::Hour | Self::HourBand => matches!(ty, T::Datetime | T::Int),
            Self::AgeBandSv | Self::Under25Flag => matches!(ty, T::Int | T::Enum),
            Self::Ward | Self::Borough => matches!(ty, T::Str | T::Enum),
            Self::Ethnicity5 | Self::OffenceGroup => matches!(ty, T::Enum | T::Str),
            Self::Round5 => *ty == T::Int,
        }
    }

    /// Whether the transform fits a catalog field: its type ([`Transform::applies_to`]), every
    /// allowed value of an enum field (each must transform without error), and for text and
    /// number fields, what the field's name says it holds (`…lsoa21cd` / `…wd22cd` for areas,
    /// `…age…` for ages, `…hour…` for hours of the day, `…ethnic…`, `…offence…`). A field the
    /// agent never sends (class `direct`) takes only `deny`.
    pub fn applies_to_field(self, field: &Field) -> bool {
        if !field.is_sent() {
            return self == Self::Deny;
        }
        if !self.applies_to(&field.ty) {
            return false;
        }
        if field.ty == FieldType::Enum && !field.values.is_empty() {
            return field
                .values
                .iter()
                .all(|v| self.apply(Cell::Text(v)).is_ok());
        }
        let name = field.name.as_str();
        match (self, field.ty) {
            (Self::Ward, _) => name.ends_with("lsoa21cd") || name.ends_with("wd22cd"),
            (Self::Borough, _) => name.ends_with("lsoa21cd") || name.ends_with("wd22cd"),
            (Self::AgeBandSv | Self::Under25Flag, _) => name.contains("age"),
            (Self::Hour | Self::HourBand, FieldType::Int) => name.contains("hour"),
            (Self::Ethnicity5, _) => name.contains("ethnic"),
            (Self::OffenceGroup, _) => name.contains("offence"),
            _ => true,
        }
    }

    /// Applies the transform to one cell. A missing cell gives `None` for every transform.
    pub fn apply<'a>(self, cell: Cell<'a>) -> Result<Released<'a>, TransformError> {
        if cell == Cell::Missing || self.releases_nothing() {
            return Ok(None);
        }
        let out = match self {
            Self::Keep => keep(cell),
            Self::Deny | Self::DropFreeText => return Ok(None),
            Self::Day
            | Self::Week
            | Self::Month
            | Self::Quarter
            | Self::Year
            | Self::DayOfWeek
            | Self::Hour
            | Self::HourBand => temporal::apply(self, cell)?,
            Self::AgeBandSv | Self::Under25Flag => Cow::Borrowed(age::apply(self, cell)?),
            Self::Round5 => Cow::Owned(round5(self, cell)?.to_string()),
            Self::Ward | Self::Borough => Cow::Borrowed(geo::apply(self, text(self, cell)?)?),
            Self::Ethnicity5 | Self::OffenceGroup => {
                Cow::Borrowed(codes::apply(self, text(self, cell)?)?)
            }
        };
        Ok(Some(out))
    }

    /// What the transform reads, for error messages.
    fn expected_input(self) -> &'static str {
        match self {
            Self::Keep | Self::Deny => "any value",
            Self::DropFreeText => "free text",
            Self::Day => "a date or datetime",
            Self::Week => "a date, datetime or ISO week YYYY-Www",
            Self::Month => "a date, datetime or month YYYY-MM",
            Self::Quarter => "a date, datetime, month or quarter YYYY-Qn",
            Self::Year => "a date, datetime, month, quarter or year YYYY",
            Self::DayOfWeek => "a date, datetime or day name Mon..Sun",
            Self::Hour => "a datetime or an hour 0-23",
            Self::HourBand => "a datetime, an hour 0-23 or a band such as 06-11",
            Self::AgeBandSv => "an age in whole years 0-130 or an SV age band such as 18-24",
            Self::Under25Flag => "an age in whole years 0-130, an SV age band or true/false",
            Self::Ward => "an LSOA 2021 or ward code in policies/lookups/kingston_lsoa.csv",
            Self::Borough => "an LSOA 2021, ward or borough code of Kingston upon Thames",
            Self::Ethnicity5 => "an ONS 2021 category, NHS ethnic category letter or IC code",
            Self::OffenceGroup => "a Home Office offence code such as 8N, or an ONS offence group",
            Self::Round5 => "a whole-number count",
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Transform {
    type Err = UnknownTransform;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Pairs `(a, b)` where `a`'s output is a function of `b`'s output (besides `keep`, `deny` and
/// reflexivity): releasing `a` when `b` is allowed reveals nothing more. Property-tested.
const DERIVES: &[(Transform, Transform)] = &[
    (Transform::Year, Transform::Quarter),
    (Transform::Year, Transform::Month),
    (Transform::Year, Transform::Day),
    (Transform::Quarter, Transform::Month),
    (Transform::Quarter, Transform::Day),
    (Transform::Month, Transform::Day),
    (Transform::Week, Transform::Day),
    (Transform::DayOfWeek, Transform::Day),
    (Transform::HourBand, Transform::Hour),
    (Transform::Under25Flag, Transform::AgeBandSv),
    (Transform::Borough, Transform::Ward),
];

/// Whether `a` releases nothing finer than `b`: `a`'s output can be computed from `b`'s, so a
/// request for `a` is allowed where the ISA allows `b`. `keep` is the finest and `deny` /
/// `drop_free_text` the coarsest of all. A partial order: `week` and `month`, or `month` and
/// `day_of_week`, are incomparable (neither can be computed from the other), so a request for
/// `week` where the ISA allows `month` is refused.
pub fn coarser_or_equal(a: Transform, b: Transform) -> bool {
    a == b || a.releases_nothing() || b == Transform::Keep || DERIVES.contains(&(a, b))
}

impl fmt::Debug for Cell<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cell::{}(..)", self.kind())
    }
}

impl<'a> Cell<'a> {
    /// The kind of cell, for error messages: `missing`, `text`, `int`, `flag`, `date`,
    /// `datetime` or `set`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Text(_) => "text",
            Self::Int(_) => "int",
            Self::Flag(_) => "flag",
            Self::Date(_) => "date",
            Self::Datetime(_) => "datetime",
            Self::Set(_) => "set",
        }
    }
}

impl<'a> From<&'a pb::Value> for Cell<'a> {
    fn from(v: &'a pb::Value) -> Self {
        use pb::value::Kind;
        match &v.kind {
            None => Self::Missing,
            Some(Kind::Text(s)) => Self::Text(s),
            Some(Kind::Int(i)) => Self::Int(*i),
            Some(Kind::Flag(b)) => Self::Flag(*b),
            Some(Kind::Date(s)) => Self::Date(s),
            Some(Kind::Datetime(s)) => Self::Datetime(s),
            Some(Kind::Set(set)) => Self::Set(SetItems::decoded(&set.items)),
        }
    }
}

impl<'a> From<Option<&'a pb::Value>> for Cell<'a> {
    fn from(v: Option<&'a pb::Value>) -> Self {
        v.map_or(Self::Missing, Self::from)
    }
}

/// Separator between the items of a kept set.
pub const SET_SEPARATOR: &str = "; ";

fn keep(cell: Cell<'_>) -> Cow<'_, str> {
    match cell {
        Cell::Missing => Cow::Borrowed(""),
        Cell::Text(s) | Cell::Date(s) | Cell::Datetime(s) => Cow::Borrowed(s),
        Cell::Int(i) => Cow::Owned(i.to_string()),
        Cell::Flag(b) => Cow::Borrowed(if b { "true" } else { "false" }),
        Cell::Set(items) => Cow::Owned(items.join(SET_SEPARATOR)),
    }
}

/// The text of a text cell (codes are stored as text or enum text).
fn text<'a>(t: Transform, cell: Cell<'a>) -> Result<&'a str, TransformError> {
    match cell {
        Cell::Text(s) => Ok(s),
        other => Err(TransformError::WrongType {
            transform: t,
            got: other.kind(),
        }),
    }
}

fn round5(t: Transform, cell: Cell<'_>) -> Result<i64, TransformError> {
    let n = match cell {
        Cell::Int(n) => n,
        Cell::Text(s) => parse_int(s).ok_or(TransformError::Shape { transform: t })?,
        other => {
            return Err(TransformError::WrongType {
                transform: t,
                got: other.kind(),
            });
        }
    };
    let r = n.rem_euclid(5);
    let rounded = if r >= 3 {
        n.checked_add(5 - r)
    } else {
        n.checked_sub(r)
    };
    rounded.ok_or(TransformError::OutOfRange { transform: t })
}

/// A decimal integer with an optional leading `-`, no other characters.
fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn hint_for(name: &str) -> String {
    let names = Transform::names();
    let close = suggest(name, &names);
    if !close.is_empty() {
        return close;
    }
    // Fall back to the longest shared prefix, ignoring underscores ("agebands" → age_band_sv).
    let squash = |s: &str| s.replace('_', "").to_ascii_lowercase();
    let got = squash(name);
    names
        .iter()
        .map(|n| {
            let common = squash(n)
                .chars()
                .zip(got.chars())
                .take_while(|(a, b)| a == b)
                .count();
            (common, *n)
        })
        .filter(|(common, _)| *common >= 4)
        .max_by_key(|(common, _)| *common)
        .map(|(_, n)| format!(" (did you mean \"{n}\"?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
