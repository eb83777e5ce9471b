//! Per-field keyed tokens for probabilistic (Fellegi–Sunter style) linkage: for each field a few
//! variants that agree when the values agree exactly, sound alike, share a prefix or their
//! first and last letters, or agree on part of a date or postcode, each
//! `HMAC-SHA256(subkey(field, variant), lp(parts…))` truncated to 16 bytes.
//!
//! A person's tokens are a fixed [`TokenSet`] with one slot per [`Slot`], so comparing two
//! people is 22 16-byte compares ([`TokenSet::agreement`]) and no allocation. A missing value
//! leaves its slots empty; nothing is ever a token of the empty string.
//!
//! Never holds or returns a raw value; [`FuzzyToken`]'s `Debug` is redacted. Deterministic
//! tokens still leak value frequencies (research §6.2): only the gateway may see them, and
//! never an analyst.

use super::keys::{FuzzyKey, HmacSha256, mac16};
use super::person::PersonFields;
use super::phonetic;
use std::fmt;

/// The field a token or Bloom-filter feature is taken from; its name is the `<field>` of the
/// subkey's HKDF info.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldId {
    /// Surname.
    Surname,
    /// First forename.
    Forename,
    /// First forename and surname together, ignoring their order.
    Name,
    /// Date of birth.
    Dob,
    /// Sex.
    Sex,
    /// Postcode.
    Postcode,
}

impl FieldId {
    /// The field's name in HKDF info strings: `surname`, `forename`, `name`, `dob`, `sex`,
    /// `postcode`.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldId::Surname => "surname",
            FieldId::Forename => "forename",
            FieldId::Name => "name",
            FieldId::Dob => "dob",
            FieldId::Sex => "sex",
            FieldId::Postcode => "postcode",
        }
    }
}

/// How a field's value is transformed before it is keyed; its name is the `<variant>` of the
/// subkey's HKDF info.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VariantId {
    /// The canonical value (names: words separated by one space).
    Exact,
    /// Names without spaces or punctuation (`O'Neil`, `O Neil` and `ONeil` agree).
    Compact,
    /// Double Metaphone code (primary or alternate: both are keyed alike so they can be
    /// compared crosswise).
    Phonetic,
    /// The first four letters of the compact name (the whole name if shorter).
    Prefix4,
    /// The first letter and the last four letters of the compact name (the whole name if it
    /// has five or fewer): agrees when a typo is in the middle or near the start.
    Ends,
    /// One word of a multi-word surname (`Smith-Jones` gives `SMITH` and `JONES`), keyed alike
    /// so either agrees with the other record's single-word surname.
    Part,
    /// Sorted {first forename, compact surname}: agrees when the two are swapped.
    Unordered,
    /// The full value (date `Y-M-D`, postcode `KT1 1EE`).
    Full,
    /// Year and month of birth (tolerates a wrong day).
    YearMonth,
    /// Year and day of birth (tolerates a wrong month).
    YearDay,
    /// Month and day of birth (tolerates a wrong year).
    MonthDay,
    /// Year with {month, day} sorted (tolerates a day/month swap).
    YearDayMonthUnordered,
    /// Postcode sector (`KT1 1`).
    Sector,
    /// Postcode district, the outward code (`KT1`).
    District,
    /// First Bloom-filter hash of the field (see [`super::clk`]).
    ClkA,
    /// Second Bloom-filter hash of the field (see [`super::clk`]).
    ClkB,
}

impl VariantId {
    /// The variant's name in HKDF info strings.
    pub fn as_str(self) -> &'static str {
        match self {
            VariantId::Exact => "exact",
            VariantId::Compact => "compact",
            VariantId::Phonetic => "dm",
            VariantId::Prefix4 => "prefix4",
            VariantId::Ends => "ends",
            VariantId::Part => "part",
            VariantId::Unordered => "unordered",
            VariantId::Full => "full",
            VariantId::YearMonth => "ym",
            VariantId::YearDay => "yd",
            VariantId::MonthDay => "md",
            VariantId::YearDayMonthUnordered => "y-dm-unordered",
            VariantId::Sector => "sector",
            VariantId::District => "district",
            VariantId::ClkA => "clk-a",
            VariantId::ClkB => "clk-b",
        }
    }
}

/// A position in a [`TokenSet`]: one token of one field and variant. Two slots share a key when
/// they are alternatives to compare crosswise (phonetic primary/alternate, surname parts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    /// Surname words joined by one space.
    SurnameExact,
    /// Surname without spaces.
    SurnameCompact,
    /// Double Metaphone primary code of the compact surname.
    SurnamePhonetic,
    /// Double Metaphone alternate code of the compact surname, when it differs from the primary.
    SurnamePhoneticAlt,
    /// First four letters of the compact surname.
    SurnamePrefix4,
    /// First word of the surname.
    SurnamePartFirst,
    /// Last word of the surname, when it has more than one.
    SurnamePartLast,
    /// First forename.
    ForenameExact,
    /// Double Metaphone primary code of the first forename.
    ForenamePhonetic,
    /// Double Metaphone alternate code of the first forename, when it differs.
    ForenamePhoneticAlt,
    /// First four letters of the first forename.
    ForenamePrefix4,
    /// Sorted {first forename, compact surname}.
    NameUnordered,
    /// Date of birth.
    DobFull,
    /// Year and month of birth.
    DobYearMonth,
    /// Year and day of birth.
    DobYearDay,
    /// Month and day of birth.
    DobMonthDay,
    /// Year of birth with {month, day} sorted.
    DobYearDayMonthUnordered,
    /// Sex.
    Sex,
    /// Full postcode.
    PostcodeFull,
    /// Postcode sector.
    PostcodeSector,
    /// Postcode district.
    PostcodeDistrict,
    /// First letter and last four letters of the compact surname. Last in the set, so a set
    /// without it, from an agent before it, keeps its wire form and compares on the rest (its
    /// level not compared); a gateway before it refuses sets that hold it, so upgrade the
    /// gateway before the agents.
    SurnameEnds,
}

impl Slot {
    /// How many slots a [`TokenSet`] has.
    pub const COUNT: usize = 22;

    /// Every slot, in [`TokenSet`] order.
    pub const ALL: [Slot; Slot::COUNT] = [
        Slot::SurnameExact,
        Slot::SurnameCompact,
        Slot::SurnamePhonetic,
        Slot::SurnamePhoneticAlt,
        Slot::SurnamePrefix4,
        Slot::SurnamePartFirst,
        Slot::SurnamePartLast,
        Slot::ForenameExact,
        Slot::ForenamePhonetic,
        Slot::ForenamePhoneticAlt,
        Slot::ForenamePrefix4,
        Slot::NameUnordered,
        Slot::DobFull,
        Slot::DobYearMonth,
        Slot::DobYearDay,
        Slot::DobMonthDay,
        Slot::DobYearDayMonthUnordered,
        Slot::Sex,
        Slot::PostcodeFull,
        Slot::PostcodeSector,
        Slot::PostcodeDistrict,
        Slot::SurnameEnds,
    ];

    /// The slot's position in a [`TokenSet`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The field the slot's token is taken from.
    pub fn field(self) -> FieldId {
        use Slot::*;
        match self {
            SurnameExact | SurnameCompact | SurnamePhonetic | SurnamePhoneticAlt
            | SurnamePrefix4 | SurnameEnds | SurnamePartFirst | SurnamePartLast => FieldId::Surname,
            ForenameExact | ForenamePhonetic | ForenamePhoneticAlt | ForenamePrefix4 => {
                FieldId::Forename
            }
            NameUnordered => FieldId::Name,
            DobFull | DobYearMonth | DobYearDay | DobMonthDay | DobYearDayMonthUnordered => {
                FieldId::Dob
            }
            Sex => FieldId::Sex,
            PostcodeFull | PostcodeSector | PostcodeDistrict => FieldId::Postcode,
        }
    }

    /// The variant the slot's token is keyed with (alternatives share their primary's variant).
    pub fn variant(self) -> VariantId {
        use Slot::*;
        match self {
            SurnameExact | ForenameExact | Sex => VariantId::Exact,
            SurnameCompact => VariantId::Compact,
            SurnamePhonetic | SurnamePhoneticAlt | ForenamePhonetic | ForenamePhoneticAlt => {
                VariantId::Phonetic
            }
            SurnamePrefix4 | ForenamePrefix4 => VariantId::Prefix4,
            SurnameEnds => VariantId::Ends,
            SurnamePartFirst | SurnamePartLast => VariantId::Part,
            NameUnordered => VariantId::Unordered,
            DobFull | PostcodeFull => VariantId::Full,
            DobYearMonth => VariantId::YearMonth,
            DobYearDay => VariantId::YearDay,
            DobMonthDay => VariantId::MonthDay,
            DobYearDayMonthUnordered => VariantId::YearDayMonthUnordered,
            PostcodeSector => VariantId::Sector,
            PostcodeDistrict => VariantId::District,
        }
    }

    /// The slot whose agreement bit reports this one in [`TokenSet::agreement`]: alternatives
    /// report under their primary (`SurnamePhoneticAlt` → `SurnamePhonetic`, `SurnamePartLast`
    /// → `SurnamePartFirst`); every other slot under itself.
    pub fn primary(self) -> Slot {
        match self {
            Slot::SurnamePhoneticAlt => Slot::SurnamePhonetic,
            Slot::ForenamePhoneticAlt => Slot::ForenamePhonetic,
            Slot::SurnamePartLast => Slot::SurnamePartFirst,
            other => other,
        }
    }

    /// The other slot of a crosswise pair, if this slot is in one.
    fn partner(self) -> Option<Slot> {
        match self {
            Slot::SurnamePhonetic => Some(Slot::SurnamePhoneticAlt),
            Slot::SurnamePhoneticAlt => Some(Slot::SurnamePhonetic),
            Slot::ForenamePhonetic => Some(Slot::ForenamePhoneticAlt),
            Slot::ForenamePhoneticAlt => Some(Slot::ForenamePhonetic),
            Slot::SurnamePartFirst => Some(Slot::SurnamePartLast),
            Slot::SurnamePartLast => Some(Slot::SurnamePartFirst),
            _ => None,
        }
    }
}

/// A 16-byte keyed token (HMAC-SHA256 truncated). `Debug` is redacted.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FuzzyToken(pub [u8; 16]);

impl fmt::Debug for FuzzyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FuzzyToken(<redacted>)")
    }
}

/// One token with the field and variant it was keyed with: the list form of a [`TokenSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldToken {
    /// The field.
    pub field: FieldId,
    /// The variant (which, with the field, names the subkey).
    pub variant: VariantId,
    /// The token.
    pub token: FuzzyToken,
}

/// A person's tokens, one optional token per [`Slot`]: 22 × 16 bytes and a presence mask,
/// `Copy`, compared slot by slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenSet {
    present: u32,
    tokens: [FuzzyToken; Slot::COUNT],
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSet(<redacted>; {} tokens)", self.len())
    }
}

impl Default for TokenSet {
    fn default() -> Self {
        Self {
            present: 0,
            tokens: [FuzzyToken::default(); Slot::COUNT],
        }
    }
}

impl TokenSet {
    /// The token in a slot, if the value it comes from was present.
    pub fn get(&self, slot: Slot) -> Option<FuzzyToken> {
        (self.present & bit(slot) != 0).then(|| self.tokens[slot.index()])
    }

    /// Sets a slot (as a decoder of a received set would).
    pub fn set(&mut self, slot: Slot, token: FuzzyToken) {
        self.present |= bit(slot);
        self.tokens[slot.index()] = token;
    }

    /// How many slots hold a token.
    pub fn len(&self) -> usize {
        self.present.count_ones() as usize
    }

    /// Whether no slot holds a token (nothing usable was recorded).
    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// The tokens present, in slot order, with their slots.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, FuzzyToken)> + '_ {
        Slot::ALL
            .into_iter()
            .filter_map(move |s| self.get(s).map(|t| (s, t)))
    }

    /// The tokens present as `(field, variant, token)`, in slot order.
    pub fn to_vec(&self) -> Vec<FieldToken> {
        self.iter()
            .map(|(s, token)| FieldToken {
                field: s.field(),
                variant: s.variant(),
                token,
            })
            .collect()
    }

    /// The wire form (`sharing.v1.FuzzyTokens`): the presence mask (bit `i` is
    /// `Slot::ALL[i]`) and 16 bytes per present slot, in slot order.
    pub fn to_wire(&self) -> (u32, Vec<u8>) {
        let mut bytes = Vec::with_capacity(16 * self.len());
        for (_, t) in self.iter() {
            bytes.extend_from_slice(&t.0);
        }
        (self.present, bytes)
    }

    /// A set from its wire form; refuses a mask naming slots that do not exist or bytes that
    /// are not 16 per present slot.
    pub fn from_wire(present: u32, bytes: &[u8]) -> Result<Self, WireTokensError> {
        if present >> Slot::COUNT != 0 {
            return Err(WireTokensError::UnknownSlots);
        }
        let want = 16 * present.count_ones() as usize;
        if bytes.len() != want {
            return Err(WireTokensError::Length {
                want,
                got: bytes.len(),
            });
        }
        let mut set = TokenSet::default();
        let mut chunks = bytes.chunks_exact(16);
        for s in Slot::ALL {
            if present & bit(s) != 0
                && let Some(c) = chunks.next()
            {
                let mut t = [0u8; 16];
                t.copy_from_slice(c);
                set.set(s, FuzzyToken(t));
            }
        }
        Ok(set)
    }

    /// Which comparisons agree between two people. A slot agrees when both sets hold it and the
    /// tokens are equal; for a crosswise pair ([`Slot::primary`]) any token of one set's pair
    /// equal to any of the other's sets the primary's bit. Missing on either side is neither
    /// agreement nor disagreement: see [`Agreement::compared`].
    pub fn agreement(&self, other: &TokenSet) -> Agreement {
        let both = self.present & other.present;
        let mut agree = 0u32;
        let mut compared = 0u32;
        for s in Slot::ALL {
            let p = s.primary();
            if self.present & bit(s) != 0 && other.present & bit(p) != 0 {
                compared |= bit(p);
            }
            if both & bit(s) != 0 && self.tokens[s.index()] == other.tokens[s.index()] {
                agree |= bit(p);
            }
            if let Some(q) = s.partner()
                && self.present & bit(s) != 0
                && other.present & bit(q) != 0
                && self.tokens[s.index()] == other.tokens[q.index()]
            {
                agree |= bit(p);
            }
        }
        Agreement { agree, compared }
    }
}

/// Why a received fuzzy token set is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireTokensError {
    /// The presence mask names slots beyond the known ones.
    #[error("the presence mask names token slots this version does not know")]
    UnknownSlots,
    /// The token bytes are not 16 per present slot.
    #[error("expected {want} bytes of tokens (16 per present slot), got {got}")]
    Length {
        /// Expected length.
        want: usize,
        /// Received length.
        got: usize,
    },
}

/// The outcome of comparing two [`TokenSet`]s, per primary slot: agreed, disagreed (both
/// present, not equal), or not compared (missing on a side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Agreement {
    agree: u32,
    compared: u32,
}

impl Agreement {
    /// Whether the comparison reported under `slot` agrees.
    pub fn agrees(&self, slot: Slot) -> bool {
        self.agree & bit(slot.primary()) != 0
    }

    /// Whether both sides had a value for the comparison reported under `slot`.
    pub fn compared(&self, slot: Slot) -> bool {
        self.compared & bit(slot.primary()) != 0
    }

    /// The bit mask of agreeing primary slots (bit `i` is `Slot::ALL[i]`), for table lookups.
    pub fn agree_mask(&self) -> u32 {
        self.agree
    }

    /// The bit mask of compared primary slots.
    pub fn compared_mask(&self) -> u32 {
        self.compared
    }
}

/// The token subkeys, derived once from the [`FuzzyKey`] and kept as HMAC states. `Debug` is
/// redacted.
#[derive(Clone)]
pub struct TokenKeys {
    macs: Vec<HmacSha256>,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKeys(<redacted>)")
    }
}

impl TokenKeys {
    /// Derives the subkey of every slot's (field, variant).
    pub fn derive(key: &FuzzyKey) -> Self {
        Self {
            macs: Slot::ALL
                .iter()
                .map(|s| key.subkey(s.field().as_str(), s.variant().as_str()).mac())
                .collect(),
        }
    }

    /// The tokens of one person. Slots of missing values stay empty.
    pub fn encode(&self, p: &PersonFields) -> TokenSet {
        let mut set = TokenSet::default();
        let mut put = |slot: Slot, parts: &[&[u8]]| {
            let mac = &self.macs[slot.index()];
            set.set(slot, FuzzyToken(mac16(mac, parts)));
        };

        let surname = p.surname_compact();
        if let (Some(exact), Some(compact)) = (p.surname_exact(), surname.as_deref()) {
            put(Slot::SurnameExact, &[exact.as_bytes()]);
            put(Slot::SurnameCompact, &[compact.as_bytes()]);
            names(
                &mut put,
                compact,
                [
                    Slot::SurnamePhonetic,
                    Slot::SurnamePhoneticAlt,
                    Slot::SurnamePrefix4,
                ],
            );
            put(Slot::SurnameEnds, &ends(compact));
            if let Some(first) = p.surname.first() {
                put(Slot::SurnamePartFirst, &[first.as_bytes()]);
            }
            if let Some(last) = p.surname.last().filter(|_| p.surname.len() > 1) {
                put(Slot::SurnamePartLast, &[last.as_bytes()]);
            }
        }
        if let Some(first) = p.first_forename() {
            put(Slot::ForenameExact, &[first.as_bytes()]);
            names(
                &mut put,
                first,
                [
                    Slot::ForenamePhonetic,
                    Slot::ForenamePhoneticAlt,
                    Slot::ForenamePrefix4,
                ],
            );
            if let Some(s) = surname.as_deref() {
                let (a, b) = if first <= s { (first, s) } else { (s, first) };
                put(Slot::NameUnordered, &[a.as_bytes(), b.as_bytes()]);
            }
        }
        if let Some(d) = p.dob {
            let y = format!("{:04}", d.year);
            let m = format!("{:02}", d.month);
            let dd = format!("{:02}", d.day);
            let (lo, hi) = if m <= dd { (&m, &dd) } else { (&dd, &m) };
            put(Slot::DobFull, &[y.as_bytes(), m.as_bytes(), dd.as_bytes()]);
            put(Slot::DobYearMonth, &[y.as_bytes(), m.as_bytes()]);
            put(Slot::DobYearDay, &[y.as_bytes(), dd.as_bytes()]);
            put(Slot::DobMonthDay, &[m.as_bytes(), dd.as_bytes()]);
            put(
                Slot::DobYearDayMonthUnordered,
                &[y.as_bytes(), lo.as_bytes(), hi.as_bytes()],
            );
        }
        if let Some(sex) = p.sex {
            put(Slot::Sex, &[sex.code().as_bytes()]);
        }
        if let Some(pc) = &p.postcode {
            put(Slot::PostcodeFull, &[pc.full().as_bytes()]);
            put(Slot::PostcodeSector, &[pc.sector().as_bytes()]);
            put(Slot::PostcodeDistrict, &[pc.district().as_bytes()]);
        }
        set
    }
}

/// The phonetic (primary, alternate) and prefix tokens of one name, into `slots` =
/// `[phonetic, phonetic alternate, prefix]`.
fn names(put: &mut impl FnMut(Slot, &[&[u8]]), name: &str, slots: [Slot; 3]) {
    let [phonetic, alternate_slot, prefix] = slots;
    if let Some((primary, alternate)) = phonetic::double_metaphone(name) {
        put(phonetic, &[primary.as_bytes()]);
        if let Some(alt) = alternate {
            put(alternate_slot, &[alt.as_bytes()]);
        }
    }
    let end = name.len().min(4);
    if let Some(p4) = name.get(..end) {
        put(prefix, &[p4.as_bytes()]);
    }
}

/// The first letter and the last four letters of a name (the first letter's bytes, then the
/// rest's; the name alone when it has five letters or fewer).
fn ends(name: &str) -> [&[u8]; 2] {
    let mut back = name.char_indices().rev().map(|(at, _)| at);
    let last4 = back.nth(3).unwrap_or(0);
    let first = name.chars().next().map_or(0, char::len_utf8);
    if last4 <= first {
        [name.as_bytes(), &[]]
    } else {
        [&name.as_bytes()[..first], &name.as_bytes()[last4..]]
    }
}

fn bit(slot: Slot) -> u32 {
    1 << slot.index()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzy::person::RawPerson;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn fields(f: &str, s: &str, d: &str, x: &str, p: &str) -> PersonFields {
        PersonFields::from_raw(&RawPerson {
            forenames: Some(f),
            surname: Some(s),
            dob: Some(d),
            sex: Some(x),
            postcode: Some(p),
        })
        .0
    }

    fn keys(b: u8) -> TokenKeys {
        TokenKeys::derive(&FuzzyKey::from_bytes(&[b; 32]))
    }

    #[test]
    fn wire_form_round_trips_and_refuses_bad_shapes() {
        let t = keys(1).encode(&fields("John", "Smith", "1990-03-05", "M", ""));
        let (present, bytes) = t.to_wire();
        assert_eq!(bytes.len(), 16 * t.len());
        assert_eq!(TokenSet::from_wire(present, &bytes), Ok(t));
        assert_eq!(
            TokenSet::from_wire(present, &bytes[1..]),
            Err(WireTokensError::Length {
                want: bytes.len(),
                got: bytes.len() - 1
            })
        );
        assert_eq!(
            TokenSet::from_wire(present | 1 << Slot::COUNT, &bytes),
            Err(WireTokensError::UnknownSlots)
        );
        assert_eq!(TokenSet::from_wire(0, &[]), Ok(TokenSet::default()));
        // A set from an agent before the surname's ends slot (the last one): the same wire
        // form without its bit and its 16 bytes still reads, and compares on everything else.
        let ends = 1 << Slot::SurnameEnds.index();
        assert_ne!(present & ends, 0);
        let old = TokenSet::from_wire(present & !ends, &bytes[..bytes.len() - 16])
            .expect("an older agent's set");
        assert_eq!(old.len(), t.len() - 1);
        let ag = old.agreement(&t);
        assert!(!ag.compared(Slot::SurnameEnds));
        assert!(ag.agrees(Slot::SurnameCompact) && ag.agrees(Slot::DobFull));
    }

    #[test]
    fn slot_table_is_consistent() {
        for (i, s) in Slot::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
            assert_eq!(s.primary().field(), s.field());
            assert_eq!(s.primary().variant(), s.variant());
            if let Some(q) = s.partner() {
                assert_eq!(q.partner(), Some(*s));
                assert_eq!(q.primary(), s.primary());
            }
        }
        // Distinct (field, variant) pairs apart from the crosswise pairs.
        let pairs: HashSet<_> = Slot::ALL.iter().map(|s| (s.field(), s.variant())).collect();
        assert_eq!(pairs.len(), Slot::COUNT - 3);
    }

    #[test]
    fn every_slot_is_filled_for_a_full_record_and_debug_is_redacted() {
        let t = keys(1).encode(&fields(
            "John Paul",
            "Smith-Jones",
            "1990-03-05",
            "F",
            "KT1 1EE",
        ));
        // SMITHJONES (SM0J, XMTJ) and JOHN (JN, AN) both have a distinct Double Metaphone alternate.
        assert_eq!(t.len(), Slot::COUNT, "{:?}", t.to_vec());
        assert_eq!(format!("{t:?}"), "TokenSet(<redacted>; 22 tokens)");
        assert!(!format!("{:?}", t.to_vec()).contains("0x"));
        let v = t.to_vec();
        assert_eq!(v.len(), t.len());
        assert_eq!(v[0].field, FieldId::Surname);
        assert_eq!(v[0].variant, VariantId::Exact);
    }

    #[test]
    fn tokens_of_different_slots_never_collide() {
        // The same string in different fields (a surname that is also a forename).
        let t = keys(2).encode(&fields("Thomas", "Thomas", "2001-01-01", "M", "KT1 1EE"));
        let all: HashSet<FuzzyToken> = t.iter().map(|(_, tok)| tok).collect();
        assert_eq!(all.len(), t.len());
    }

    #[test]
    fn one_letter_typo_keeps_phonetic_or_prefix() {
        let k = keys(3);
        let a = k.encode(&fields("John", "Thompson", "1980-07-14", "M", "KT2 5AB"));
        for typo in ["Thomson", "Thompsen", "Tompson", "Thompsoon", "Thomspon"] {
            let b = k.encode(&fields("John", typo, "1980-07-14", "M", "KT2 5AB"));
            let ag = a.agreement(&b);
            assert!(!ag.agrees(Slot::SurnameExact), "{typo}");
            assert!(
                ag.agrees(Slot::SurnamePhonetic) || ag.agrees(Slot::SurnamePrefix4),
                "{typo}"
            );
            assert!(ag.agrees(Slot::ForenameExact) && ag.agrees(Slot::DobFull));
        }
        let other = k.encode(&fields("Fatima", "Okafor", "1992-11-30", "F", "SW19 1AA"));
        let ag = a.agreement(&other);
        assert_eq!(ag.agree_mask(), 0, "a different person agrees on nothing");
        assert_eq!(ag.compared_mask().count_ones(), 19);
    }

    #[test]
    fn a_typo_after_the_first_letter_keeps_the_surnames_ends() {
        let k = keys(5);
        let enc = |s: &str| k.encode(&fields("Lily", s, "1994-02-09", "F", ""));
        // Each pair changes the prefix and the Double Metaphone code, but not the ends.
        for (a, b) in [
            ("Cromham", "Ctomham"),
            ("Salcombe", "Sakcombe"),
            ("Hartley", "Hazrtley"),
            ("Kingworth", "Kngworth"),
        ] {
            let ag = enc(a).agreement(&enc(b));
            assert!(!ag.agrees(Slot::SurnamePrefix4), "{a} {b}");
            assert!(ag.agrees(Slot::SurnameEnds), "{a} {b}");
        }
        // The same ending after another first letter, or another ending, is not the ends.
        for (a, b) in [
            ("Johnson", "Robinson"),
            ("Cromham", "Cromwell"),
            ("Smith", "Smyth"),
        ] {
            assert!(
                !enc(a).agreement(&enc(b)).agrees(Slot::SurnameEnds),
                "{a} {b}"
            );
        }
        // Five letters or fewer: the whole name, never a part of a longer one.
        assert_eq!(ends("SMITH"), [b"SMITH".as_slice(), b"".as_slice()]);
        assert_eq!(ends("SMITHS"), [b"S".as_slice(), b"ITHS".as_slice()]);
        assert_eq!(ends("ÉMILIE"), ["É".as_bytes(), b"ILIE".as_slice()]);
    }

    #[test]
    fn punctuation_and_spacing_agree_on_compact_not_exact() {
        let k = keys(4);
        let a = k.encode(&fields("Sean", "O'Neil", "", "", ""));
        let b = k.encode(&fields("Sean", "ONeil", "", "", ""));
        let ag = a.agreement(&b);
        assert!(ag.agrees(Slot::SurnameCompact) && !ag.agrees(Slot::SurnameExact));
    }

    #[test]
    fn hyphenated_surname_agrees_on_a_part_crosswise() {
        let k = keys(5);
        let single = k.encode(&fields("Amy", "Jones", "", "", ""));
        let double = k.encode(&fields("Amy", "Smith-Jones", "", "", ""));
        let ag = single.agreement(&double);
        assert!(ag.agrees(Slot::SurnamePartFirst) && ag.agrees(Slot::SurnamePartLast));
        assert!(!ag.agrees(Slot::SurnameCompact));
        assert!(double.agreement(&single).agrees(Slot::SurnamePartFirst));
    }

    #[test]
    fn phonetic_alternates_compare_crosswise() {
        // SMITH → (SM0, XMT); SCHMIDT → (XMT, SMT): they share XMT across primary/alternate.
        let k = keys(6);
        let a = k.encode(&fields("", "Smith", "", "", ""));
        let b = k.encode(&fields("", "Schmidt", "", "", ""));
        assert!(a.agreement(&b).agrees(Slot::SurnamePhonetic));
        assert!(b.agreement(&a).agrees(Slot::SurnamePhoneticAlt));
    }

    #[test]
    fn swapped_names_agree_on_the_unordered_token() {
        let k = keys(7);
        let a = k.encode(&fields("Lee", "Morgan", "1975-02-03", "M", ""));
        let b = k.encode(&fields("Morgan", "Lee", "1975-02-03", "M", ""));
        let ag = a.agreement(&b);
        assert!(ag.agrees(Slot::NameUnordered));
        assert!(!ag.agrees(Slot::SurnameExact) && !ag.agrees(Slot::ForenameExact));
    }

    #[test]
    fn date_variants_tolerate_one_wrong_component_and_a_day_month_swap() {
        let k = keys(8);
        let t = |d: &str| k.encode(&fields("A", "B", d, "", ""));
        let base = t("1990-03-05");
        let cases = [
            ("1990-05-03", Slot::DobYearDayMonthUnordered), // day/month swap
            ("1991-03-05", Slot::DobMonthDay),              // wrong year
            ("1990-04-05", Slot::DobYearDay),               // wrong month
            ("1990-03-06", Slot::DobYearMonth),             // wrong day
        ];
        for (d, slot) in cases {
            let ag = base.agreement(&t(d));
            assert!(!ag.agrees(Slot::DobFull), "{d}");
            assert!(ag.agrees(slot), "{d} {slot:?}");
        }
        let swap = base.agreement(&t("1990-05-03"));
        for s in [Slot::DobYearMonth, Slot::DobYearDay, Slot::DobMonthDay] {
            assert!(!swap.agrees(s), "{s:?}");
        }
    }

    #[test]
    fn missing_fields_give_no_tokens() {
        let k = keys(9);
        let t = k.encode(&fields("", "Smith", "", "Unknown", ""));
        for (s, _) in t.iter() {
            assert_eq!(s.field(), FieldId::Surname, "{s:?}");
        }
        assert!(k.encode(&PersonFields::default()).is_empty());
        // No token anywhere equals the token of an empty string under its own subkey.
        let key = FuzzyKey::from_bytes(&[9; 32]);
        let full = k.encode(&fields("Ann", "Lee", "2000-01-02", "F", "KT1 1EE"));
        for (s, tok) in full.iter() {
            let mac = key.subkey(s.field().as_str(), s.variant().as_str()).mac();
            assert_ne!(tok.0, mac16(&mac, &[b""]), "{s:?}");
            assert_ne!(tok.0, mac16(&mac, &[]), "{s:?}");
        }
        // Missing on one side is "not compared", not a disagreement.
        let ag = full.agreement(&t);
        assert!(!ag.compared(Slot::DobFull) && ag.compared(Slot::SurnameCompact));
    }

    proptest! {
        #[test]
        fn deterministic_per_key_and_disjoint_across_keys(
            f in "[A-Za-z' -]{0,16}", s in "[A-Za-z' -]{0,16}",
            y in 1900i32..2024, m in 1u8..=12, d in 1u8..=28,
            a in any::<[u8; 32]>(), b in any::<[u8; 32]>(),
        ) {
            let p = fields(&f, &s, &format!("{y}-{m:02}-{d:02}"), "F", "KT1 1EE");
            let ka = TokenKeys::derive(&FuzzyKey::from_bytes(&a));
            prop_assert_eq!(ka.encode(&p), ka.encode(&p));
            if a != b {
                let kb = TokenKeys::derive(&FuzzyKey::from_bytes(&b));
                let ta: HashSet<FuzzyToken> = ka.encode(&p).iter().map(|x| x.1).collect();
                let shared = kb.encode(&p).iter().filter(|x| ta.contains(&x.1)).count();
                prop_assert_eq!(shared, 0);
            }
        }

        #[test]
        fn agreement_is_symmetric_in_its_masks(
            f1 in "[A-Z]{1,8}", s1 in "[A-Z]{1,8}", f2 in "[A-Z]{1,8}", s2 in "[A-Z]{1,8}",
        ) {
            let k = keys(10);
            let a = k.encode(&fields(&f1, &s1, "", "", ""));
            let b = k.encode(&fields(&f2, &s2, "", "", ""));
            prop_assert_eq!(a.agreement(&b), b.agreement(&a));
            prop_assert_eq!(a.agreement(&a).agree_mask(), a.agreement(&a).compared_mask());
        }
    }
}
