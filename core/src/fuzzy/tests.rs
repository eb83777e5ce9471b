//! Properties of the whole fuzzy encoding (tokens and CLK together): determinism, key
//! separation, no raw value in any output, missing values give nothing.

use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

fn raw<'a>(f: &'a str, s: &'a str, d: &'a str, x: &'a str, p: &'a str) -> RawPerson<'a> {
    RawPerson {
        forenames: Some(f),
        surname: Some(s),
        dob: Some(d),
        sex: Some(x),
        postcode: Some(p),
    }
}

fn encoder(key: &[u8; 32]) -> FuzzyEncoder {
    FuzzyEncoder::new(&FuzzyKey::from_bytes(key), ClkConfig::default()).expect("default config")
}

/// Every byte an agent would send for this record: the tokens and the CLK.
fn output_bytes(r: &FuzzyRecord) -> Vec<u8> {
    let mut out: Vec<u8> = r.tokens.iter().flat_map(|(_, t)| t.0).collect();
    out.extend(r.clk.to_bytes());
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The raw and normalised forms of a person's values that must never appear in an output.
fn secrets(r: &RawPerson<'_>) -> Vec<String> {
    let (p, _) = PersonFields::from_raw(r);
    let mut out: Vec<String> = [r.forenames, r.surname, r.dob, r.sex, r.postcode]
        .into_iter()
        .flatten()
        .map(str::to_string)
        .collect();
    out.extend(p.forenames.iter().cloned());
    out.extend(p.surname.iter().cloned());
    out.extend(p.surname_compact());
    out.extend(p.surname_exact());
    if let Some(d) = p.dob {
        out.push(d.digits());
        out.push(format!("{:04}-{:02}-{:02}", d.year, d.month, d.day));
    }
    if let Some(pc) = &p.postcode {
        out.push(pc.full().to_string());
        out.push(pc.compact());
    }
    out
}

#[test]
fn no_output_or_debug_text_holds_an_input_value() {
    let enc = encoder(&[11; 32]);
    for r in [
        raw("Mary Ann", "O'Brien-Smith", "05/03/1990", "F", "kt1 1ee"),
        raw("Lee", "Ng", "2001-12-31", "M", "SW19 2AB"),
        raw("Zoë", "Ångström", "19750704", "Female", "TW1 3QS"),
    ] {
        let (rec, invalid) = enc.encode_raw(&r);
        assert!(invalid.is_empty());
        let bytes = output_bytes(&rec);
        let debug = format!("{rec:?} {:?} {:?}", rec.tokens.to_vec(), r);
        for s in secrets(&r).iter().filter(|s| s.len() >= 3) {
            assert!(!contains(&bytes, s.as_bytes()), "value in output");
            assert!(!debug.contains(s.as_str()), "value in Debug: {debug}");
        }
    }
}

#[test]
fn swapped_forename_and_surname_match_on_the_order_free_token() {
    let enc = encoder(&[12; 32]);
    let (a, _) = enc.encode_raw(&raw("Morgan", "Lewis", "1985-06-02", "M", "KT2 6AB"));
    let (b, _) = enc.encode_raw(&raw("Lewis", "Morgan", "1985-06-02", "M", "KT2 6AB"));
    let ag = a.tokens.agreement(&b.tokens);
    assert!(ag.agrees(Slot::NameUnordered) && ag.agrees(Slot::DobFull));
    assert!(!ag.agrees(Slot::SurnameCompact));
}

#[test]
fn missing_fields_give_no_token_and_no_bits() {
    let enc = encoder(&[13; 32]);
    let (empty, _) = enc.encode_raw(&RawPerson::default());
    assert!(empty.tokens.is_empty());
    assert_eq!(empty.clk.ones(), 0);
    let (blank, _) = enc.encode_raw(&raw(" ", "", "", "", "  "));
    assert_eq!(blank, empty);
    let (invalid, bad) = enc.encode_raw(&raw("--", "'", "31/02/1990", "?", "XYZ"));
    assert_eq!(invalid, empty);
    assert_eq!(bad.len(), 5);
}

#[test]
fn one_letter_surname_typo_keeps_a_high_dice_and_different_people_are_low() {
    let enc = encoder(&[14; 32]);
    let (a, _) = enc.encode_raw(&raw("Olivia", "Harrison", "1999-09-09", "F", "KT3 4PQ"));
    let (b, _) = enc.encode_raw(&raw("Olivia", "Harrisson", "1999-09-09", "F", "KT3 4PQ"));
    let (c, _) = enc.encode_raw(&raw("Patrick", "Mensah", "1968-02-17", "M", "KT6 7RS"));
    let ag = a.tokens.agreement(&b.tokens);
    assert!(ag.agrees(Slot::SurnamePhonetic) || ag.agrees(Slot::SurnamePrefix4));
    assert!(dice(&a.clk, &b.clk) > 0.9, "{}", dice(&a.clk, &b.clk));
    assert!(dice(&a.clk, &c.clk) < 0.7, "{}", dice(&a.clk, &c.clk));
    assert_eq!(a.tokens.agreement(&c.tokens).agree_mask(), 0);
}

proptest! {
    #[test]
    fn encoding_is_deterministic_keyed_and_never_shows_a_value(
        f in "[A-Za-z]{4,12}", s in "[A-Za-z' -]{4,16}",
        y in 1920i32..2020, m in 1u8..=12, d in 1u8..=28,
        a in any::<[u8; 32]>(), b in any::<[u8; 32]>(),
    ) {
        let dob = format!("{d:02}/{m:02}/{y}");
        let r = raw(&f, &s, &dob, "M", "KT19 9XY");
        let ea = encoder(&a);
        let (ra, _) = ea.encode_raw(&r);
        prop_assert_eq!(&ea.encode_raw(&r).0, &ra);
        let bytes = output_bytes(&ra);
        for secret in secrets(&r).iter().filter(|s| s.len() >= 4) {
            prop_assert!(!contains(&bytes, secret.as_bytes()));
        }
        prop_assume!(a != b);
        let (rb, _) = encoder(&b).encode_raw(&r);
        let ta: HashSet<FuzzyToken> = ra.tokens.iter().map(|x| x.1).collect();
        prop_assert!(rb.tokens.iter().all(|x| !ta.contains(&x.1)));
        prop_assert!(dice(&ra.clk, &rb.clk) < 0.7);
    }
}
