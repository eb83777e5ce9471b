//! Log injection: hostile text in every string of an audit entry (line breaks, NUL and other
//! control characters, bidirectional overrides, JSON-breaking quotes, a 1 MB value) must
//! round-trip exactly through the canonical encoding, and the encoding must stay one line, so
//! an export (one entry per line) cannot be forged or split by what an entry says.

use gateway::audit::entry::{Action, Actor, AgreementRef, Counts, Decision, Entry};
use gateway::audit::export::{self, ExportWriter};
use skp_core::checkpoint::{self, Checkpoint, SigningKey};
use skp_core::merkle;

/// Values an attacker may get into an entry: a peer address, a certificate identity, a JWT
/// subject, a dataset or field name, a refusal reason.
fn hostile_values() -> Vec<(&'static str, String)> {
    vec![
        ("newline", "ingest ok\n{\"v\":1,\"seq\":8}".to_owned()),
        ("carriage return", "peer\r\n# checkpoint\r\n".to_owned()),
        ("line separators", "a\u{2028}b\u{2029}c\u{85}d".to_owned()),
        ("nul", "before\0after".to_owned()),
        ("every C0 control", (0u8..0x20).map(char::from).collect()),
        ("delete and C1", "\u{7f}\u{80}\u{9b}31m".to_owned()),
        (
            "terminal escape",
            "\u{1b}[2J\u{1b}[31mALLOW\u{1b}[0m".to_owned(),
        ),
        ("rtl override", "analyst\u{202e}kcatta\u{202c}".to_owned()),
        (
            "bidi isolates",
            "\u{2066}\u{2067}\u{2068}\u{2069}\u{200f}".to_owned(),
        ),
        (
            "json break-out",
            "\",\"decision\":\"allow\"}\n{\"v\":1".to_owned(),
        ),
        ("backslashes", "\\\\\"\\n\\u0000".to_owned()),
        ("non-bmp", "\u{1f600}\u{10ffff}".to_owned()),
    ]
}

/// An entry with `value` in every string an actor or request can influence.
fn entry_with(value: &str) -> Entry {
    let mut entry = Entry::new(
        Actor {
            kind: value.to_owned(),
            id: value.to_owned(),
            agency: Some(value.to_owned()),
        },
        Action::Deny,
        Decision::Deny,
    );
    entry.seq = 42;
    entry.prev = value.to_owned();
    entry.time = value.to_owned();
    entry.reason = Some(value.to_owned());
    entry.datasets = vec![value.to_owned(), "police_crime".to_owned()];
    entry.fields = vec![value.to_owned()];
    entry.counts = Some(Counts::ingest(1, 2, 3, 4));
    entry.agreement = Some(AgreementRef {
        id: value.to_owned(),
        version: value.to_owned(),
        policy_sha256: value.to_owned(),
        purpose: value.to_owned(),
    });
    entry.rows = Some(u64::MAX);
    entry.released_sha256 = Some(value.to_owned());
    entry.release = Some(value.to_owned());
    entry.peer = Some(value.to_owned());
    entry
}

/// Checks that `entry` encodes to one line without control characters and decodes back to
/// itself.
fn assert_round_trips_on_one_line(what: &str, entry: &Entry) {
    let encoded = entry.encode();
    assert!(
        !encoded.contains(&b'\n') && !encoded.contains(&b'\r'),
        "{what}: the encoded entry holds a raw line break"
    );
    assert!(
        !encoded.iter().any(|b| *b < 0x20),
        "{what}: the encoded entry holds a raw C0 control character"
    );
    assert_eq!(encoded.first(), Some(&b'{'), "{what}: not one JSON object");
    assert_eq!(encoded.last(), Some(&b'}'), "{what}: not one JSON object");
    let decoded = Entry::decode(&encoded)
        .unwrap_or_else(|e| panic!("{what}: the encoded entry does not decode: {e}"));
    assert_eq!(
        &decoded, entry,
        "{what}: the entry changed in the round trip"
    );
    assert_eq!(decoded.leaf_hash(), entry.leaf_hash(), "{what}: leaf hash");
}

#[test]
fn hostile_values_round_trip_exactly_on_one_line() {
    for (what, value) in hostile_values() {
        assert_round_trips_on_one_line(what, &entry_with(&value));
    }
}

/// A 1 MB value made of line breaks, NULs and RTL overrides.
fn one_megabyte() -> String {
    let unit = "line\n\0\u{202e}x\r";
    unit.repeat((1 << 20) / unit.len() + 1)
}

#[test]
fn a_one_megabyte_hostile_value_round_trips_on_one_line() {
    let value = one_megabyte();
    assert!(value.len() >= 1 << 20);
    let mut entry = Entry::new(Actor::anonymous(), Action::AuthFailure, Decision::Deny);
    entry.reason = Some(value.clone());
    entry.peer = Some(value);
    assert_round_trips_on_one_line("1 MB", &entry);
}

#[test]
fn hostile_values_in_one_field_at_a_time_round_trip() {
    for (what, value) in hostile_values() {
        let base = || Entry::new(Actor::gateway(), Action::AuthFailure, Decision::Deny);
        let mut reason = base();
        reason.reason = Some(value.clone());
        assert_round_trips_on_one_line(what, &reason);
        let mut peer = base();
        peer.peer = Some(value.clone());
        assert_round_trips_on_one_line(what, &peer);
        let subject = Entry::new(
            Actor {
                kind: "analyst".into(),
                id: value.clone(),
                agency: None,
            },
            Action::AuditQuery,
            Decision::Allow,
        );
        assert_round_trips_on_one_line(what, &subject);
    }
}

#[test]
fn hostile_entries_stay_one_line_each_in_an_export() {
    let mut values = hostile_values();
    values.push(("1 MB", one_megabyte()));
    let entries: Vec<Entry> = values
        .iter()
        .map(|(what, value)| {
            if *what == "1 MB" {
                let mut entry = Entry::new(Actor::anonymous(), Action::AuthFailure, Decision::Deny);
                entry.reason = Some(value.clone());
                entry
            } else {
                entry_with(value)
            }
        })
        .collect();
    let mut writer = ExportWriter::new(Vec::new()).expect("writing to memory");
    for entry in &entries {
        writer
            .entry(&entry.encode())
            .expect("a canonical entry is one line");
    }
    let leaves: Vec<merkle::Hash> = entries.iter().map(Entry::leaf_hash).collect();
    let key = SigningKey::from_seed_bytes("hostile-test", &[3; 32]).expect("a valid key name");
    let size = u64::try_from(leaves.len()).expect("a small log");
    let note = checkpoint::sign(
        &Checkpoint::new("hostile.example/audit", size, merkle::root(&leaves))
            .expect("a valid origin"),
        &key,
    )
    .expect("signs");
    let bytes = writer.finish(&note).expect("writing to memory");

    let parsed = export::parse_bytes(&bytes).expect("the export's framing is intact");
    assert_eq!(
        parsed.entries.len(),
        entries.len(),
        "entries were split or merged"
    );
    for ((what, _), (line, entry)) in values.iter().zip(parsed.entries.iter().zip(&entries)) {
        assert_eq!(
            *line,
            entry.encode().as_slice(),
            "{what}: the line is not the entry"
        );
        assert_eq!(&Entry::decode(line).expect("decodes"), entry, "{what}");
    }
    assert_eq!(parsed.note, note);
}

#[test]
fn a_raw_line_break_inside_an_entry_is_refused() {
    let canonical = String::from_utf8(entry_with("x").encode()).expect("UTF-8");
    let broken = canonical.replacen("\"reason\":\"x\"", "\"reason\":\"x\ny\"", 1);
    assert_ne!(
        broken, canonical,
        "the reason field is where the test expects it"
    );
    assert!(Entry::decode(broken.as_bytes()).is_err());
    let nul = canonical.replacen("\"reason\":\"x\"", "\"reason\":\"x\0y\"", 1);
    assert!(Entry::decode(nul.as_bytes()).is_err());
    let mut writer = ExportWriter::new(Vec::new()).expect("writing to memory");
    assert!(writer.entry(broken.as_bytes()).is_err());
}
