use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};

fn tok(n: u8) -> Token {
    Token([n; 32])
}

fn node(i: usize) -> PersonNode {
    // Two roles per record, so role indexes are exercised too.
    PersonNode::new((i / 2) as u64 + 100, (i % 2) as u32)
}

/// Random persons: each a small set of (kind, token) over a small alphabet, so collisions are
/// common.
fn persons() -> impl Strategy<Value = Vec<Vec<(TokenKind, Token)>>> {
    let pair = (0usize..5, 0u8..6).prop_map(|(k, t)| (TokenKind::ALL[k], tok(t)));
    prop::collection::vec(prop::collection::vec(pair, 0..4), 0..40)
}

fn kind_set() -> impl Strategy<Value = KindSet> {
    (0u8..32).prop_map(KindSet)
}

/// The oracle: connected components of the graph "share an allowed token", by BFS, each
/// labelled with its smallest node.
fn naive(kinds: KindSet, persons: &[Vec<(TokenKind, Token)>]) -> Vec<PersonNode> {
    let n = persons.len();
    let shares = |a: usize, b: usize| {
        persons[a]
            .iter()
            .any(|x| kinds.contains(x.0) && persons[b].contains(x))
    };
    let mut label = vec![None; n];
    for start in 0..n {
        if label[start].is_some() {
            continue;
        }
        let mut component = vec![start];
        let mut queue = VecDeque::from([start]);
        label[start] = Some(PersonNode::new(0, 0));
        while let Some(a) = queue.pop_front() {
            for (b, slot) in label.iter_mut().enumerate() {
                if slot.is_none() && shares(a, b) {
                    *slot = Some(PersonNode::new(0, 0));
                    component.push(b);
                    queue.push_back(b);
                }
            }
        }
        let least = component.iter().map(|&i| node(i)).min().expect("non-empty");
        for i in component {
            label[i] = Some(least);
        }
    }
    label.into_iter().map(|l| l.expect("labelled")).collect()
}

fn ids(linker: &mut Linker, n: usize) -> Vec<PersonNode> {
    (0..n)
        .map(|i| linker.cluster(node(i)).expect("added").0)
        .collect()
}

proptest! {
    #[test]
    fn union_find_matches_bfs_over_the_token_graph(kinds in kind_set(), persons in persons()) {
        let mut linker = Linker::build(
            kinds,
            persons.iter().enumerate().map(|(i, t)| (node(i), t.as_slice())),
        )
        .expect("distinct nodes");
        let want = naive(kinds, &persons);
        prop_assert_eq!(ids(&mut linker, persons.len()), want.clone());
        for a in 0..persons.len() {
            for b in 0..persons.len() {
                prop_assert_eq!(linker.same_cluster(node(a), node(b)), want[a] == want[b]);
            }
        }
    }

    #[test]
    fn incremental_adds_equal_a_batch_build_in_any_order(
        kinds in kind_set(),
        persons in persons(),
        cut in 0usize..40,
        seed in any::<u64>(),
    ) {
        let n = persons.len();
        // Batch build in a scrambled order.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (i as u64).wrapping_mul(seed | 1).rotate_left(17) ^ seed);
        let mut batch = Linker::build(kinds, order.iter().map(|&i| (node(i), persons[i].clone())))
            .expect("distinct nodes");
        // Incremental: two batches, clusters queried in between (path compression runs).
        let mut inc = Linker::new(kinds);
        let cut = cut.min(n);
        for (i, t) in persons.iter().enumerate().take(cut) {
            inc.add(node(i), t).expect("distinct nodes");
        }
        let _ = ids(&mut inc, cut);
        for (i, t) in persons.iter().enumerate().skip(cut) {
            inc.add(node(i), t).expect("distinct nodes");
        }
        prop_assert_eq!(ids(&mut inc, n), ids(&mut batch, n));
    }

    #[test]
    fn cluster_ids_are_stable_under_adds(
        kinds in kind_set(),
        old in persons(),
        new in persons(),
    ) {
        let mut linker = Linker::new(kinds);
        for (i, t) in old.iter().enumerate() {
            linker.add(node(i), t).expect("distinct nodes");
        }
        let before = ids(&mut linker, old.len());
        // Later records: larger sequence numbers, as the store assigns them.
        for (j, t) in new.iter().enumerate() {
            linker.add(node(old.len() + j), t).expect("distinct nodes");
        }
        let after = ids(&mut linker, old.len());
        for a in 0..old.len() {
            // The new id is the smallest old id among the old nodes now in the same cluster:
            // unchanged unless new evidence merged it with a cluster holding a smaller node.
            let merged_least = (0..old.len())
                .filter(|&b| after[b] == after[a])
                .map(|b| before[b])
                .min()
                .expect("a is in its own cluster");
            prop_assert_eq!(after[a], merged_least);
            if (0..old.len()).all(|b| after[b] != after[a] || before[b] == before[a]) {
                prop_assert_eq!(after[a], before[a]);
            }
        }
    }
}

#[test]
fn tokens_of_kinds_not_allowed_never_link() {
    let mut linker = Linker::new(KindSet::of(&[TokenKind::Nhs]));
    let shared = [
        (TokenKind::Pnc, tok(1)),
        (TokenKind::Demo, tok(2)),
        (TokenKind::Uprn, tok(3)),
        (TokenKind::Ref, tok(4)),
    ];
    let a = PersonNode::new(1, 0);
    let b = PersonNode::new(2, 0);
    let c = PersonNode::new(3, 0);
    linker.add(a, &shared).expect("new");
    linker.add(b, &shared).expect("new");
    assert!(!linker.same_cluster(a, b));
    // The same bytes under an allowed kind do link, and only the nodes that carry that kind.
    linker.add(c, &[(TokenKind::Nhs, tok(1))]).expect("new");
    assert!(!linker.same_cluster(a, c));
    let d = PersonNode::new(4, 0);
    linker.add(d, &[(TokenKind::Nhs, tok(1))]).expect("new");
    assert!(linker.same_cluster(c, d));
    assert_eq!(linker.cluster(d), Some(ClusterId(c)));
    // An empty kind set links nothing.
    let mut none = Linker::new(KindSet::EMPTY);
    none.add(a, &[(TokenKind::Nhs, tok(1))]).expect("new");
    none.add(b, &[(TokenKind::Nhs, tok(1))]).expect("new");
    assert!(!none.same_cluster(a, b));
}

#[test]
fn a_bridging_record_merges_two_clusters_under_the_smaller_id() {
    let mut linker = Linker::new(KindSet::of(&[TokenKind::Nhs, TokenKind::Pnc]));
    let a = PersonNode::new(5, 1);
    let b = PersonNode::new(7, 0);
    let bridge = PersonNode::new(9, 0);
    assert_eq!(linker.add(b, &[(TokenKind::Pnc, tok(2))]), Ok(ClusterId(b)));
    assert_eq!(linker.add(a, &[(TokenKind::Nhs, tok(1))]), Ok(ClusterId(a)));
    let got = linker.add(
        bridge,
        &[(TokenKind::Nhs, tok(1)), (TokenKind::Pnc, tok(2))],
    );
    assert_eq!(got, Ok(ClusterId(a)));
    assert_eq!(linker.cluster(b), Some(ClusterId(a)));
    assert_eq!(linker.cluster(PersonNode::new(5, 0)), None);
}

#[test]
fn adding_a_node_twice_is_refused_and_changes_nothing() {
    let mut linker = Linker::new(KindSet::of(&[TokenKind::Nhs]));
    let a = PersonNode::new(1, 0);
    linker.add(a, &[(TokenKind::Nhs, tok(1))]).expect("new");
    assert_eq!(
        linker.add(a, &[(TokenKind::Nhs, tok(2))]),
        Err(LinkageError::DuplicateNode { node: a })
    );
    assert_eq!(linker.len(), 1);
    let b = PersonNode::new(2, 0);
    linker.add(b, &[(TokenKind::Nhs, tok(2))]).expect("new");
    assert!(!linker.same_cluster(a, b));
}

#[test]
fn kind_sets_parse_purpose_linkage_lists() {
    let set = KindSet::parse(["nhs", "demo"]).expect("known kinds");
    assert_eq!(set, KindSet::of(&[TokenKind::Demo, TokenKind::Nhs]));
    assert_eq!(format!("{set:?}"), r#"{"nhs", "demo"}"#);
    assert_eq!(
        KindSet::parse(["nhs", "NHS"]),
        Err(LinkageError::UnknownKind { name: "NHS".into() })
    );
    for k in TokenKind::ALL {
        assert_eq!(TokenKind::parse(k.as_str()), Some(k));
    }
    assert_eq!(TokenKind::parse("rec"), None);
}

#[test]
fn summary_counts_cross_agency_links() {
    let nhs = KindSet::of(&[TokenKind::Nhs]);
    let mut linker = Linker::new(nhs);
    // Record 1 (police): victim and suspect; record 2 (council): the victim again; record 3
    // (police): the suspect again; record 4 (icb): someone else.
    let agency: BTreeMap<u64, &str> = [
        (1, "met-police"),
        (2, "rbk-council"),
        (3, "met-police"),
        (4, "swl-icb"),
    ]
    .into();
    linker
        .add(PersonNode::new(1, 0), &[(TokenKind::Nhs, tok(1))])
        .expect("new");
    linker
        .add(PersonNode::new(1, 1), &[(TokenKind::Nhs, tok(2))])
        .expect("new");
    linker
        .add(PersonNode::new(2, 0), &[(TokenKind::Nhs, tok(1))])
        .expect("new");
    linker
        .add(PersonNode::new(3, 0), &[(TokenKind::Nhs, tok(2))])
        .expect("new");
    linker
        .add(PersonNode::new(4, 0), &[(TokenKind::Nhs, tok(3))])
        .expect("new");
    let s = linker.summary(|n| agency[&n.seq]);
    assert_eq!(
        s,
        LinkageSummary {
            person_nodes: 5,
            records: 4,
            clusters: 3,
            multi_node_clusters: 2,
            cross_agency_clusters: 1,
            records_linked_across_agencies: 2,
        }
    );
    assert_eq!(Linker::new(nhs).summary(|_| ()), LinkageSummary::default());
}

fn key(b: u8) -> ReleaseKey {
    ReleaseKey::from_bytes(&[b; 32])
}

#[test]
fn person_ids_are_stable_for_one_release_scope_and_differ_across_scopes() {
    let cluster = ClusterId(PersonNode::new(42, 1));
    let id = |k: &ReleaseKey, agreement: &str, purpose: &str, scope: &IdScope| {
        k.release(agreement, purpose, scope).person_id(cluster)
    };
    let base = id(&key(1), "sv-duty", "hotspots", &IdScope::Purpose);
    assert_eq!(base.as_str().len(), 32);
    assert!(
        base.as_str()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    // Same parameters, same id (also from a key parsed from hex).
    assert_eq!(base, id(&key(1), "sv-duty", "hotspots", &IdScope::Purpose));
    let from_hex = ReleaseKey::from_hex(&format!(" {} \n", hex::encode([1u8; 32]))).expect("hex");
    assert_eq!(
        base,
        id(&from_hex, "sv-duty", "hotspots", &IdScope::Purpose)
    );
    // Anything else changes it.
    let others = [
        id(&key(2), "sv-duty", "hotspots", &IdScope::Purpose),
        id(&key(1), "sv-duty", "evaluation", &IdScope::Purpose),
        id(&key(1), "dv-mash", "hotspots", &IdScope::Purpose),
        // Length prefixes keep ("sv-dutyh", "otspots") apart from ("sv-duty", "hotspots").
        id(&key(1), "sv-dutyh", "otspots", &IdScope::Purpose),
        id(
            &key(1),
            "sv-duty",
            "hotspots",
            &IdScope::AgreementVersion("3".into()),
        ),
        id(
            &key(1),
            "sv-duty",
            "hotspots",
            &IdScope::Release(ReleaseNonce([0; 16])),
        ),
        id(
            &key(1),
            "sv-duty",
            "hotspots",
            &IdScope::Release(ReleaseNonce([1; 16])),
        ),
    ];
    let mut all: HashSet<PersonId> = others.iter().cloned().collect();
    all.insert(base.clone());
    assert_eq!(all.len(), others.len() + 1);
    // Other clusters get other ids under one release.
    let keys = key(1).release("sv-duty", "hotspots", &IdScope::Purpose);
    assert_ne!(keys.person_id(ClusterId(PersonNode::new(42, 0))), base);
    assert_ne!(keys.person_id(ClusterId(PersonNode::new(41, 1))), base);
}

proptest! {
    #[test]
    fn distinct_clusters_get_distinct_ids(a in any::<(u64, u32)>(), b in any::<(u64, u32)>()) {
        prop_assume!(a != b);
        let keys = key(7).release("a", "p", &IdScope::Purpose);
        prop_assert_ne!(
            keys.person_id(ClusterId(PersonNode::new(a.0, a.1))),
            keys.person_id(ClusterId(PersonNode::new(b.0, b.1)))
        );
    }
}

#[test]
fn release_keys_parse_only_32_hex_bytes() {
    for bad in ["", "00", &"0".repeat(62), &"0".repeat(66), &"g".repeat(64)] {
        assert_eq!(
            ReleaseKey::from_hex(bad).err(),
            Some(LinkageError::KeyFormat)
        );
    }
}

#[test]
fn debug_never_prints_keys_tokens_or_ids() {
    let raw = [0xabu8; 32];
    let k = ReleaseKey::from_bytes(&raw);
    let keys = k.release("sv-duty", "hotspots", &IdScope::Purpose);
    let id = keys.person_id(ClusterId(PersonNode::new(1, 0)));
    let mut linker = Linker::new(KindSet::of(&[TokenKind::Nhs]));
    linker
        .add(PersonNode::new(1, 0), &[(TokenKind::Nhs, Token(raw))])
        .expect("new");
    let secrets = [
        hex::encode(raw),
        hex::encode(k.prk),
        hex::encode(keys.key),
        id.as_str().to_owned(),
        "171".into(), // 0xab in decimal, as a derived Debug of the byte arrays would print
    ];
    for text in [
        format!("{k:?}"),
        format!("{keys:?}"),
        format!("{id:?}"),
        format!("{linker:?}"),
        format!("{:?}", k.clone()),
    ] {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{text} shows secret material");
        }
    }
    assert_eq!(format!("{k:?}"), "ReleaseKey(<redacted>)");
    assert_eq!(format!("{keys:?}"), "ReleaseKeys(<redacted>)");
}

proptest! {
    /// A lookup near a hint finds exactly what a plain lookup finds, whatever the order of
    /// the queries and whether the nodes were added in order.
    #[test]
    fn lookups_near_a_hint_equal_plain_lookups(
        seqs in proptest::collection::btree_set((1u64..400, 0u32..3), 0..120),
        queries in proptest::collection::vec((0u64..420, 0u32..4), 0..200),
        shuffle in any::<bool>(),
    ) {
        let mut nodes: Vec<PersonNode> = seqs.iter().map(|&(s, r)| PersonNode::new(s, r)).collect();
        if shuffle {
            nodes.reverse();
        }
        let mut linker = Linker::new(KindSet::of(&[TokenKind::Nhs]));
        for n in &nodes {
            linker.add(*n, &[]).expect("distinct");
        }
        let mut sorted_queries = queries.clone();
        sorted_queries.sort();
        for qs in [queries, sorted_queries] {
            let mut hint = 0usize;
            for (s, r) in qs {
                let q = PersonNode::new(s, r);
                let near = linker.slot_near(&mut hint, q).map(|slot| linker.least_of(slot).1);
                prop_assert_eq!(near, linker.cluster(q));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzzy linkage inside the linker.

mod fuzzy_linker {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use skp_core::fuzzy::link::MatchSettings;
    use skp_core::fuzzy::{PersonFields, RawPerson, TokenSet};

    const SURNAMES: &[&str] = &[
        "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
        "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards",
        "Hughes", "Green", "Hall", "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood",
        "Turner", "Martin", "Cooper", "Hill", "Ward", "Morris", "Moore", "Clark", "Lee", "King",
        "Baker", "Harrison", "Morgan", "Allen", "Okafor", "Mensah", "Nowak", "Kowalski", "Khan",
    ];
    const FORENAMES: &[&str] = &[
        "Olivia", "Amelia", "Isla", "Ava", "Mia", "Emily", "Sophia", "Grace", "Lily", "Freya",
        "Oliver", "George", "Noah", "Arthur", "Harry", "Leo", "Jack", "Charlie", "Oscar", "James",
        "William", "Thomas", "Daniel", "Michael", "David", "Robert", "Sarah", "Emma",
    ];

    struct Person {
        forename: String,
        surname: String,
        dob: String,
        sex: &'static str,
    }

    fn people(n: usize, rng: &mut StdRng) -> Vec<Person> {
        (0..n)
            .map(|_| Person {
                forename: FORENAMES[rng.random_range(0..FORENAMES.len())].into(),
                surname: SURNAMES[rng.random_range(0..SURNAMES.len())].into(),
                dob: format!(
                    "{}-{:02}-{:02}",
                    rng.random_range(1940..2010),
                    rng.random_range(1..13),
                    rng.random_range(1..29)
                ),
                sex: if rng.random_bool(0.5) { "F" } else { "M" },
            })
            .collect()
    }

    fn set(p: &Person, key: &skp_core::LinkageKey) -> TokenSet {
        let (fields, _) = PersonFields::from_raw(&RawPerson {
            forenames: Some(&p.forename),
            surname: Some(&p.surname),
            dob: Some(&p.dob),
            sex: Some(p.sex),
            postcode: None,
        });
        key.fuzzy().encode(&fields)
    }

    /// A one-letter typo in the middle of a name.
    fn typo(s: &str) -> String {
        let mut c: Vec<char> = s.chars().collect();
        let i = c.len() / 2;
        c[i] = if c[i] == 'x' { 'y' } else { 'x' };
        c.into_iter().collect()
    }

    fn fuzzy_linker() -> Linker {
        Linker::with_fuzzy(KindSet::of(&[TokenKind::Demo]), MatchSettings::default())
    }

    /// 600 people, each recorded twice (records 1..=600 and 601..=1200, one role each); the
    /// second record of the first 100 has a surname typo, so no exact token joins them.
    fn two_agencies(key: &skp_core::LinkageKey) -> (Vec<Person>, Vec<TokenSet>) {
        let mut rng = StdRng::seed_from_u64(7);
        let ps = people(600, &mut rng);
        let mut sets: Vec<TokenSet> = ps.iter().map(|p| set(p, key)).collect();
        for (i, p) in ps.iter().enumerate() {
            let copy = Person {
                forename: p.forename.clone(),
                surname: if i < 100 {
                    typo(&p.surname)
                } else {
                    p.surname.clone()
                },
                dob: p.dob.clone(),
                sex: p.sex,
            };
            sets.push(set(&copy, key));
        }
        (ps, sets)
    }

    #[test]
    fn links_a_typo_after_settling_and_new_nodes_at_once() {
        let key = skp_core::LinkageKey::from_bytes(&[3; 32]);
        let (_, sets) = two_agencies(&key);
        let mut l = fuzzy_linker();
        for (i, s) in sets.iter().enumerate().take(1100) {
            l.add_with(PersonNode::new(i as u64 + 1, 0), &[], Some(s))
                .expect("add");
        }
        // Before settling: nothing is linked (no exact tokens were given).
        assert!(!l.same_cluster(PersonNode::new(1, 0), PersonNode::new(601, 0)));
        l.settle();
        assert!(l.fuzzy_model().is_some());
        // A typo'd surname (record 601 is person 0 with a typo) and an exact copy both link.
        assert!(l.same_cluster(PersonNode::new(1, 0), PersonNode::new(601, 0)));
        assert!(l.same_cluster(PersonNode::new(200, 0), PersonNode::new(800, 0)));
        // Incremental: once the model exists, a new batch links when it settles, without a
        // new model.
        let n = PersonNode::new(1101, 0);
        l.add_with(n, &[], Some(&sets[1100])).expect("add");
        assert!(!l.same_cluster(PersonNode::new(501, 0), n));
        l.settle();
        assert!(l.same_cluster(PersonNode::new(501, 0), n));
        let c = l.fuzzy_counts().expect("fuzzy");
        assert_eq!(c.nodes, 1101);
        assert!(c.unions >= 500, "{c:?}");
        assert!(!l.wants_rebuild());
        // Different people stay apart: no cluster holds more than the person's two records.
        let mut sizes: HashMap<ClusterId, usize> = HashMap::new();
        for i in 0..1101u64 {
            *sizes
                .entry(l.cluster(PersonNode::new(i + 1, 0)).expect("node"))
                .or_default() += 1;
        }
        assert!(sizes.values().all(|n| *n <= 2), "an over-merged cluster");
    }

    /// Tokens of a person recorded without a date of birth.
    fn set_without_dob(
        forename: &str,
        surname: &str,
        sex: &str,
        key: &skp_core::LinkageKey,
    ) -> TokenSet {
        let (fields, _) = PersonFields::from_raw(&RawPerson {
            forenames: Some(forename),
            surname: Some(surname),
            dob: None,
            sex: Some(sex),
            postcode: None,
        });
        key.fuzzy().encode(&fields)
    }

    #[test]
    fn a_node_without_a_date_of_birth_attaches_to_one_person_and_never_merges_two() {
        let key = skp_core::LinkageKey::from_bytes(&[3; 32]);
        let (_, sets) = two_agencies(&key);
        let mut l = fuzzy_linker();
        for (i, s) in sets.iter().enumerate() {
            l.add_with(PersonNode::new(i as u64 + 1, 0), &[], Some(s))
                .expect("add");
        }
        let dated = |f: &str, s: &str, dob: &str| {
            set(
                &Person {
                    forename: f.into(),
                    surname: s.into(),
                    dob: dob.into(),
                    sex: "M",
                },
                &key,
            )
        };
        let undated = |f: &str, s: &str| set_without_dob(f, s, "M", &key);
        // Added before the model is estimated (so it knows how rare these names are); when
        // the linker settles, the dated ones are scored first, then the undated ones.
        let nodes = [
            // One dated Zebedee Quaxworth: the undated one joins him.
            dated("Zebedee", "Quaxworth", "1970-01-01"),
            undated("Zebedee", "Quaxworth"),
            // Two dated Ignatius Plumtrees: the undated one is ambiguous and joins neither.
            dated("Ignatius", "Plumtree", "1950-03-04"),
            dated("Ignatius", "Plumtree", "1988-11-12"),
            undated("Ignatius", "Plumtree"),
            // The same when the undated one comes first in the batch: it does not join
            // whichever Cuthbert Wimbleham happens to be scored first.
            undated("Cuthbert", "Wimbleham"),
            dated("Cuthbert", "Wimbleham", "1944-02-03"),
            dated("Cuthbert", "Wimbleham", "1979-09-10"),
            // An undated Barnaby Rudge attached to the one dated Barnaby Rudge of the batch...
            dated("Barnaby", "Rudge", "1961-05-06"),
            undated("Barnaby", "Rudge"),
            // One dated Aldous Fernsby now; a later batch brings another.
            dated("Aldous", "Fernsby", "1930-06-07"),
        ];
        let n: Vec<PersonNode> = (0..nodes.len() as u64 + 4)
            .map(|i| PersonNode::new(2001 + i, 0))
            .collect();
        for (node, t) in n.iter().zip(&nodes) {
            l.add_with(*node, &[], Some(t)).expect("add");
        }
        l.settle();
        // ... does not bridge him to a second one, born another year, added later.
        // A later batch: an undated Aldous Fernsby before a second dated one. Scored after
        // him, not in arrival order, so he joins neither.
        l.add_with(n[12], &[], Some(&undated("Aldous", "Fernsby")))
            .expect("add");
        l.add_with(n[13], &[], Some(&dated("Aldous", "Fernsby", "1990-01-02")))
            .expect("add");
        l.add_with(n[11], &[], Some(&dated("Barnaby", "Rudge", "1999-07-08")))
            .expect("add");
        l.settle();
        let c = l.fuzzy_counts().expect("fuzzy");
        assert!(l.same_cluster(n[0], n[1]), "{c:?}");
        assert!(!l.same_cluster(n[2], n[3]));
        assert!(!l.same_cluster(n[4], n[2]) && !l.same_cluster(n[4], n[3]));
        assert!(!l.same_cluster(n[6], n[7]));
        assert!(!l.same_cluster(n[5], n[6]) && !l.same_cluster(n[5], n[7]));
        assert!(!l.same_cluster(n[12], n[10]) && !l.same_cluster(n[12], n[13]));
        assert_eq!(c.ambiguous_weak, 3, "{c:?}");
        assert!(l.same_cluster(n[8], n[9]), "{c:?}");
        assert!(
            !l.same_cluster(n[8], n[11]),
            "weak evidence merged two dated people"
        );
        assert!(c.refused_weak >= 1, "{c:?}");
    }

    #[test]
    fn an_exact_only_linker_ignores_fuzzy_tokens() {
        let key = skp_core::LinkageKey::from_bytes(&[3; 32]);
        let (_, sets) = two_agencies(&key);
        let mut l = Linker::new(KindSet::of(&[TokenKind::Demo]));
        for (i, s) in sets.iter().enumerate() {
            l.add_with(PersonNode::new(i as u64 + 1, 0), &[], Some(s))
                .expect("add");
        }
        l.settle();
        assert!(l.fuzzy_counts().is_none() && l.fuzzy_model().is_none());
        assert!(!l.same_cluster(PersonNode::new(200, 0), PersonNode::new(800, 0)));
    }

    #[test]
    fn two_roles_of_one_record_never_become_one_person() {
        let key = skp_core::LinkageKey::from_bytes(&[3; 32]);
        let (ps, sets) = two_agencies(&key);
        let mut l = fuzzy_linker();
        // Record 1 has two roles: person 0 and a near-copy of them (a family member with the
        // same name and date of birth, as a victim and a suspect of one crime).
        let twin = set(
            &Person {
                forename: ps[0].forename.clone(),
                surname: ps[0].surname.clone(),
                dob: ps[0].dob.clone(),
                sex: ps[0].sex,
            },
            &key,
        );
        l.add_with(PersonNode::new(1, 0), &[], Some(&sets[0]))
            .expect("add");
        l.add_with(PersonNode::new(1, 1), &[], Some(&twin))
            .expect("add");
        for (i, s) in sets.iter().enumerate().skip(1) {
            l.add_with(PersonNode::new(i as u64 + 1, 0), &[], Some(s))
                .expect("add");
        }
        l.settle();
        assert!(!l.same_cluster(PersonNode::new(1, 0), PersonNode::new(1, 1)));
        // Person 0's other record joined one of them, not both.
        let other = PersonNode::new(601, 0);
        assert!(
            l.same_cluster(PersonNode::new(1, 0), other)
                ^ l.same_cluster(PersonNode::new(1, 1), other)
        );
        assert!(l.fuzzy_counts().expect("fuzzy").refused_same_record >= 1);
    }

    #[test]
    fn a_store_that_doubles_asks_for_a_rebuild() {
        let key = skp_core::LinkageKey::from_bytes(&[3; 32]);
        let (_, sets) = two_agencies(&key);
        let mut l = fuzzy_linker();
        for (i, s) in sets.iter().enumerate().take(500) {
            l.add_with(PersonNode::new(i as u64 + 1, 0), &[], Some(s))
                .expect("add");
        }
        l.settle();
        assert!(!l.wants_rebuild());
        for (i, s) in sets.iter().enumerate().skip(500) {
            l.add_with(PersonNode::new(i as u64 + 1, 0), &[], Some(s))
                .expect("add");
        }
        l.settle();
        assert!(l.wants_rebuild(), "1,200 nodes on a model of 500");
    }

    #[test]
    fn clusters_do_not_depend_on_the_key() {
        let partition = |k: u8| {
            let key = skp_core::LinkageKey::from_bytes(&[k; 32]);
            let (_, sets) = two_agencies(&key);
            let mut l = fuzzy_linker();
            for (i, s) in sets.iter().enumerate() {
                l.add_with(PersonNode::new(i as u64 + 1, 0), &[], Some(s))
                    .expect("add");
            }
            l.settle();
            (1..=sets.len() as u64)
                .map(|i| l.cluster(PersonNode::new(i, 0)).expect("node"))
                .collect::<Vec<_>>()
        };
        assert_eq!(partition(1), partition(2));
    }
}
