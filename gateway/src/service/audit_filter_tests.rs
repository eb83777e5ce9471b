//! Unit tests of the audit query filters ([`Filter::matches`]): the time window (from
//! inclusive, to exclusive, compared as instants), actor, purpose, decision and agreement.

use super::*;
use crate::audit::entry::{Actor, AgreementRef};

/// An entry at `time` by analyst `actor` of rbk-council under SV / `purpose`.
fn entry(time: &str, actor: &str, purpose: &str, decision: Decision) -> Entry {
    let mut e = Entry::new(
        Actor {
            kind: "analyst".into(),
            id: actor.into(),
            agency: Some("rbk-council".into()),
        },
        Action::Release,
        decision,
    );
    e.time = time.into();
    e.agreement = Some(AgreementRef {
        id: "SKP-ISA-SV-01".into(),
        version: "1.1".into(),
        policy_sha256: "ab".repeat(32),
        purpose: purpose.into(),
    });
    e
}

fn at(time: &str) -> Entry {
    entry(time, "jane", "serious-violence-sna", Decision::Allow)
}

fn filter(q: pb::AuditQuery) -> Filter {
    Filter::new(q).unwrap_or_else(|s| panic!("the filter is refused: {}", s.message()))
}

fn window(from: &str, to: &str) -> Filter {
    filter(pb::AuditQuery {
        from_time: from.into(),
        to_time: to.into(),
        ..Default::default()
    })
}

#[test]
fn to_is_exclusive_and_from_inclusive_at_the_same_instant_with_milliseconds() {
    let f = window("", "2026-11-25T10:00:00Z");
    assert!(
        !f.matches(&at("2026-11-25T10:00:00.000Z")),
        "to is exclusive"
    );
    // As strings '.' < 'Z', so "10:00:00.500Z" < "10:00:00Z": the bug this guards against.
    assert!(!f.matches(&at("2026-11-25T10:00:00.500Z")));
    assert!(f.matches(&at("2026-11-25T09:59:59.999Z")));

    let f = window("2026-11-25T10:00:00Z", "");
    assert!(
        f.matches(&at("2026-11-25T10:00:00.000Z")),
        "from is inclusive"
    );
    assert!(f.matches(&at("2026-11-25T10:00:00.500Z")));
    assert!(!f.matches(&at("2026-11-25T09:59:59.999Z")));
}

#[test]
fn bounds_may_be_dates_months_years_local_times_or_carry_an_offset() {
    let f = window("2026-11-25", "2026-11-26");
    assert!(f.matches(&at("2026-11-25T00:00:00.000Z")));
    assert!(f.matches(&at("2026-11-25T23:59:59.999Z")));
    assert!(!f.matches(&at("2026-11-26T00:00:00.000Z")));
    assert!(!f.matches(&at("2026-11-24T23:59:59.999Z")));

    let f = window("2026-11", "2027");
    assert!(f.matches(&at("2026-11-01T00:00:00.000Z")));
    assert!(f.matches(&at("2026-12-31T23:59:59.999Z")));
    assert!(!f.matches(&at("2026-10-31T23:59:59.999Z")));
    assert!(!f.matches(&at("2027-01-01T00:00:00.000Z")));

    // 11:00 at UTC+1 is 10:00 UTC; a time without an offset is UTC.
    let f = window("2026-11-25T11:00:00+01:00", "2026-11-25T10:30");
    assert!(f.matches(&at("2026-11-25T10:00:00.000Z")));
    assert!(!f.matches(&at("2026-11-25T09:59:59.999Z")));
    assert!(!f.matches(&at("2026-11-25T10:30:00.000Z")));
    let f = window("2026-11-25T10:00:00.250", "");
    assert!(!f.matches(&at("2026-11-25T10:00:00.249Z")));
    assert!(f.matches(&at("2026-11-25T10:00:00.250Z")));
}

#[test]
fn bad_times_are_refused_naming_the_filter() {
    for bad in [
        "yesterday",
        "2026-13-01",
        "2026-11-31",
        "2026-11-25T25:00",
        "2026-11-25 10:00",
        "20261125",
        &"2".repeat(31),
    ] {
        let e = Filter::new(pb::AuditQuery {
            to_time: bad.to_owned(),
            ..Default::default()
        });
        match e {
            Ok(_) => panic!("{bad:?} was taken as a time"),
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::InvalidArgument);
                assert!(
                    s.message().starts_with("to_time must be"),
                    "{}",
                    s.message()
                );
            }
        }
    }
}

#[test]
fn an_entry_whose_time_does_not_parse_matches_no_time_window() {
    assert!(!window("2026-01-01", "").matches(&at("not a time")));
    assert!(window("", "").matches(&at("not a time")));
}

#[test]
fn actor_purpose_decision_and_agreement_must_all_match() {
    let e = entry("2026-11-25T10:00:00.000Z", "jane", "sna", Decision::Deny);
    let q = |f: fn(&mut pb::AuditQuery)| {
        let mut q = pb::AuditQuery::default();
        f(&mut q);
        filter(q)
    };
    assert!(q(|_| {}).matches(&e), "no filter matches everything");
    assert!(q(|q| q.actor = "jane".into()).matches(&e));
    assert!(!q(|q| q.actor = "jan".into()).matches(&e), "actor is exact");
    assert!(q(|q| q.purpose = "sna".into()).matches(&e));
    assert!(!q(|q| q.purpose = "sna-health".into()).matches(&e));
    assert!(q(|q| q.decision = "deny".into()).matches(&e));
    assert!(!q(|q| q.decision = "allow".into()).matches(&e));
    assert!(q(|q| q.agreement = "SKP-ISA-SV-01".into()).matches(&e));
    assert!(!q(|q| q.agreement = "SKP-ISA-SV-02".into()).matches(&e));
    assert!(
        q(|q| {
            q.actor = "jane".into();
            q.purpose = "sna".into();
            q.decision = "deny".into();
            q.from_time = "2026-11-25T10:00:00Z".into();
        })
        .matches(&e)
    );
    assert!(
        !q(|q| {
            q.actor = "jane".into();
            q.purpose = "sna".into();
            q.decision = "allow".into();
        })
        .matches(&e),
        "one filter that fails is enough"
    );
    // An entry without an agreement matches no purpose or agreement filter.
    let start = Entry::new(Actor::gateway(), Action::GatewayStart, Decision::Allow);
    assert!(!q(|q| q.purpose = "sna".into()).matches(&start));
    assert!(q(|q| q.decision = "allow".into()).matches(&start));
}
