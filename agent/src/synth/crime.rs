//! Offence tables: Home Office Counting Rules codes with their class label, ONS offence group,
//! relative frequency and what they imply (a person victim, violence, a sexual offence, an
//! illustrative CJS code). Frequencies are plausible for an outer London borough [inf].

use rand::Rng;
use rand::rngs::StdRng;

/// One offence.
#[derive(Debug, Clone, Copy)]
pub struct Offence {
    /// HO code.
    pub code: &'static str,
    /// HOCR classification label.
    pub class: &'static str,
    /// ONS offence group.
    pub group: &'static str,
    /// Relative frequency.
    pub weight: u32,
    /// The victim is a person (not a business, or nobody).
    pub person_victim: bool,
    /// Violence against the person, robbery or sexual.
    pub violent: bool,
    /// Sexual offence.
    pub sexual: bool,
    /// Illustrative CJS offence code ("" when none is written).
    pub cjs: &'static str,
}

#[allow(clippy::too_many_arguments)]
const fn o(
    code: &'static str,
    class: &'static str,
    group: &'static str,
    weight: u32,
    person_victim: bool,
    violent: bool,
    sexual: bool,
    cjs: &'static str,
) -> Offence {
    Offence {
        code,
        class,
        group,
        weight,
        person_victim,
        violent,
        sexual,
        cjs,
    }
}

const VWI: &str = "Violence with injury";
const VWOI: &str = "Violence without injury";
const SH: &str = "Stalking and harassment";

/// Every offence the generator uses, general mix.
pub const GENERAL: [Offence; 24] = [
    o(
        "8N",
        "Assault with injury",
        VWI,
        90,
        true,
        true,
        false,
        "OF61016",
    ),
    o(
        "5D",
        "Assault with intent to cause serious harm",
        VWI,
        8,
        true,
        true,
        false,
        "OF61022",
    ),
    o(
        "105A",
        "Assault without injury",
        VWOI,
        110,
        true,
        true,
        false,
        "CJ88116",
    ),
    o("3B", "Threats to kill", VWOI, 7, true, true, false, ""),
    o("8L", "Harassment", SH, 50, true, true, false, "PH97003"),
    o("8Q", "Stalking", SH, 12, true, true, false, ""),
    o(
        "8R",
        "Malicious communications",
        SH,
        45,
        true,
        false,
        false,
        "",
    ),
    o(
        "19C",
        "Rape of a female aged 16 and over",
        "Rape",
        9,
        true,
        true,
        true,
        "SX03001",
    ),
    o(
        "20A",
        "Sexual assault on a female aged 13 and over",
        "Other sexual offences",
        11,
        true,
        true,
        true,
        "SX03007",
    ),
    o(
        "34B",
        "Robbery of personal property",
        "Robbery",
        28,
        true,
        true,
        false,
        "TH68023",
    ),
    o(
        "28E",
        "Burglary - residential",
        "Burglary",
        55,
        true,
        false,
        false,
        "",
    ),
    o(
        "39",
        "Theft from the person",
        "Theft",
        35,
        true,
        false,
        false,
        "",
    ),
    o(
        "44",
        "Theft or unauthorised taking of a pedal cycle",
        "Theft",
        35,
        true,
        false,
        false,
        "",
    ),
    o("46", "Shoplifting", "Theft", 75, false, false, false, ""),
    o("49", "Other theft", "Theft", 90, true, false, false, ""),
    o(
        "45",
        "Theft from a vehicle",
        "Vehicle offences",
        55,
        true,
        false,
        false,
        "",
    ),
    o(
        "48",
        "Theft or unauthorised taking of a motor vehicle",
        "Vehicle offences",
        25,
        true,
        false,
        false,
        "",
    ),
    o(
        "58A",
        "Criminal damage to a dwelling",
        "Criminal damage and arson",
        28,
        true,
        false,
        false,
        "",
    ),
    o(
        "58B",
        "Criminal damage to a building other than a dwelling",
        "Criminal damage and arson",
        14,
        false,
        false,
        false,
        "",
    ),
    o(
        "58C",
        "Criminal damage to a vehicle",
        "Criminal damage and arson",
        45,
        true,
        false,
        false,
        "",
    ),
    o(
        "56B",
        "Arson not endangering life",
        "Criminal damage and arson",
        5,
        true,
        false,
        false,
        "",
    ),
    o(
        "92D",
        "Possession of controlled drugs (cannabis)",
        "Drug offences",
        20,
        false,
        false,
        false,
        "",
    ),
    o(
        "92A",
        "Trafficking in controlled drugs",
        "Drug offences",
        5,
        false,
        false,
        false,
        "",
    ),
    o(
        "10A",
        "Possession of article with blade or point",
        "Possession of weapons offences",
        7,
        false,
        true,
        false,
        "",
    ),
];

/// Domestic abuse offences.
pub const DOMESTIC: [Offence; 8] = [
    o(
        "8N",
        "Assault with injury",
        VWI,
        25,
        true,
        true,
        false,
        "OF61016",
    ),
    o(
        "105A",
        "Assault without injury",
        VWOI,
        35,
        true,
        true,
        false,
        "CJ88116",
    ),
    o("8L", "Harassment", SH, 12, true, true, false, "PH97003"),
    o("8Q", "Stalking", SH, 6, true, true, false, ""),
    o("3B", "Threats to kill", VWOI, 3, true, true, false, ""),
    o(
        "58A",
        "Criminal damage to a dwelling",
        "Criminal damage and arson",
        10,
        true,
        false,
        false,
        "",
    ),
    o(
        "19C",
        "Rape of a female aged 16 and over",
        "Rape",
        4,
        true,
        true,
        true,
        "SX03001",
    ),
    o(
        "8R",
        "Malicious communications",
        SH,
        5,
        true,
        false,
        false,
        "",
    ),
];

/// Racially or religiously aggravated offences.
pub const AGGRAVATED: [Offence; 4] = [
    o(
        "105B",
        "Racially or religiously aggravated assault without injury",
        VWOI,
        40,
        true,
        true,
        false,
        "",
    ),
    o(
        "8M",
        "Racially or religiously aggravated harassment",
        SH,
        35,
        true,
        true,
        false,
        "",
    ),
    o(
        "8P",
        "Racially or religiously aggravated assault with injury",
        VWI,
        12,
        true,
        true,
        false,
        "",
    ),
    o(
        "58J",
        "Racially or religiously aggravated criminal damage",
        "Criminal damage and arson",
        13,
        true,
        false,
        false,
        "",
    ),
];

/// Hate crimes on other strands (no aggravated code exists).
pub const HATE_OTHER: [Offence; 4] = [
    o(
        "105A",
        "Assault without injury",
        VWOI,
        45,
        true,
        true,
        false,
        "CJ88116",
    ),
    o("8L", "Harassment", SH, 30, true, true, false, "PH97003"),
    o(
        "8N",
        "Assault with injury",
        VWI,
        12,
        true,
        true,
        false,
        "OF61016",
    ),
    o(
        "8R",
        "Malicious communications",
        SH,
        13,
        true,
        false,
        false,
        "",
    ),
];

/// Proven re-offences of supervised people.
pub const REOFFENCES: [Offence; 8] = [
    o(
        "8N",
        "Assault with injury",
        VWI,
        20,
        true,
        true,
        false,
        "OF61016",
    ),
    o(
        "105A",
        "Assault without injury",
        VWOI,
        20,
        true,
        true,
        false,
        "CJ88116",
    ),
    o("46", "Shoplifting", "Theft", 25, false, false, false, ""),
    o(
        "28E",
        "Burglary - residential",
        "Burglary",
        8,
        true,
        false,
        false,
        "",
    ),
    o(
        "92D",
        "Possession of controlled drugs (cannabis)",
        "Drug offences",
        10,
        false,
        false,
        false,
        "",
    ),
    o(
        "58C",
        "Criminal damage to a vehicle",
        "Criminal damage and arson",
        7,
        true,
        false,
        false,
        "",
    ),
    o("8L", "Harassment", SH, 6, true, true, false, "PH97003"),
    o(
        "10A",
        "Possession of article with blade or point",
        "Possession of weapons offences",
        4,
        false,
        true,
        false,
        "",
    ),
];

/// Codes in the London VRU serious-violence list.
pub const SERIOUS_VIOLENCE: &[&str] = &[
    "1", "4/1", "4/2", "2", "5D", "5E", "8N", "8P", "3B", "19C", "19D", "19E", "19F", "19G", "19H",
    "20A", "20B", "17A", "17B", "34B",
];

/// Picks an offence by weight.
pub fn pick<'a>(table: &'a [Offence], rng: &mut StdRng) -> &'a Offence {
    let total: u32 = table.iter().map(|o| o.weight).sum();
    let mut x = rng.random_range(0..total.max(1));
    for off in table {
        if x < off.weight {
            return off;
        }
        x -= off.weight;
    }
    &table[0]
}

/// An offence by code from any table.
pub fn by_code(code: &str) -> Option<&'static Offence> {
    GENERAL
        .iter()
        .chain(DOMESTIC.iter())
        .chain(AGGRAVATED.iter())
        .chain(HATE_OTHER.iter())
        .chain(REOFFENCES.iter())
        .find(|o| o.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_and_group_is_in_the_catalog() {
        let cat = skp_core::Catalog::embedded().expect("catalog");
        let ds = cat.dataset("police_crime").expect("police_crime");
        let codes = &ds.field("ho_offence_code").expect("code").values;
        let groups = &ds.field("ho_offence_group").expect("group").values;
        for o in GENERAL
            .iter()
            .chain(&DOMESTIC)
            .chain(&AGGRAVATED)
            .chain(&HATE_OTHER)
            .chain(&REOFFENCES)
        {
            assert!(codes.iter().any(|c| c == o.code), "{}", o.code);
            assert!(groups.iter().any(|g| g == o.group), "{}", o.group);
            assert!(o.cjs.len() <= 8);
        }
        for c in SERIOUS_VIOLENCE {
            assert!(codes.iter().any(|x| x == c), "{c}");
        }
    }
}
