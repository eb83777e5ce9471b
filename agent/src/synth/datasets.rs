//! One generator per catalog dataset: event `i` of a dataset → one or more rows, each with the
//! person roles it names. Generators read the [`World`] and their own random stream only (plus
//! small per-dataset state that keeps record keys unique), so output is deterministic for a
//! seed and never holds more than one event in memory.

use super::crime::{self, Offence};
use super::errors::{Agency, Role, error};
use super::geography::{self, lsoas};
use super::population::{DA_PERPETRATOR, DA_VICTIM, ETHNICITIES, VULNERABLE, age};
use super::sample::{stream, tag};
use super::world::{DAY, NIGHT, PersonFields, PoliceLink, RowBuf, Val, World, weighted};
use rand::Rng;
use rand::rngs::StdRng;
use std::collections::{HashMap, HashSet};
use time::{Date, Duration, PrimitiveDateTime};

/// State a generator keeps between events (bounded by the rows written).
#[derive(Default)]
pub struct GenState {
    seen: HashSet<u64>,
    counters: HashMap<u64, i64>,
    round: i64,
}

/// Emits rows; returns `false` once the dataset has all its rows.
pub type Emit<'e> = dyn FnMut(&RowBuf<'_>) -> anyhow::Result<bool> + 'e;

/// Generates event `i` of `dataset`, calling `emit` for each row.
pub fn generate(
    dataset: &str,
    w: &World<'_>,
    i: u64,
    st: &mut GenState,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    let mut rng = stream(w.cfg.seed, tag(dataset), i);
    match dataset {
        "police_crime" => police_crime(w, i, &mut rng, row, emit),
        "police_asb_incident" => police_asb(w, i, &mut rng, row, emit),
        "council_asb_case" => council_asb(w, i, &mut rng, row, emit),
        "council_hclic" => hclic(w, i, &mut rng, row, emit),
        "council_csc_flags" => csc(w, i, &mut rng, st, row, emit),
        "lfb_incident" => lfb(w, i, &mut rng, row, emit),
        "probation_caseload" => caseload(w, i, &mut rng, st, row, emit),
        "probation_reoffending_events" => reoffending(w, i, &mut rng, row, emit),
        "ed_istv" => istv(w, i, &mut rng, row, emit),
        "icb_ed_assault_mh_linked" => icb(w, i, &mut rng, row, emit),
        _ => Ok(()),
    }
}

/// Whether `generate` knows the dataset.
pub fn known(dataset: &str) -> bool {
    matches!(
        dataset,
        "police_crime"
            | "police_asb_incident"
            | "council_asb_case"
            | "council_hclic"
            | "council_csc_flags"
            | "lfb_incident"
            | "probation_caseload"
            | "probation_reoffending_events"
            | "ed_istv"
            | "icb_ed_assault_mh_linked"
    )
}

fn dt_plus(t: PrimitiveDateTime, minutes: i64) -> PrimitiveDateTime {
    t.checked_add(Duration::minutes(minutes)).unwrap_or(t)
}

fn date_plus(d: Date, days: i64) -> Date {
    d.checked_add(Duration::days(days)).unwrap_or(d)
}

fn lsoa_fields(row: &mut RowBuf<'_>, lsoa: u16, lsoa_field: &str, ward_field: Option<&str>) {
    let l = &lsoas()[usize::from(lsoa) % lsoas().len()];
    row.set(lsoa_field, Val::S(l.code));
    if let Some(f) = ward_field {
        row.set(f, Val::S(l.ward));
    }
}

/// The recorded ethnicity (ONS value), "Not stated" at the configured rate.
fn ethnicity(w: &World<'_>, person: usize, rng: &mut StdRng) -> &'static str {
    if rng.random_bool(w.cfg.events.ethnicity_not_stated) {
        "Not stated"
    } else {
        ETHNICITIES[usize::from(w.people[person].ethnicity)].ons
    }
}

// ---------------------------------------------------------------------------------------------
// Police

const VICTIM: PersonFields = PersonFields {
    role: "victim",
    surname: "victim_surname",
    forename: "victim_forename",
    dob: "victim_dob",
    sex: "victim_sex",
    pnc: Some("victim_pnc_id"),
    nhs: None,
};
const SUSPECT: PersonFields = PersonFields {
    role: "suspect",
    surname: "suspect_surname",
    forename: "suspect_forename",
    dob: "suspect_dob",
    sex: "suspect_sex",
    pnc: Some("suspect_pnc_id"),
    nhs: None,
};

#[derive(Clone, Copy, PartialEq)]
enum Hate {
    Race,
    Religion(u8),
    SexualOrientation,
    Disability,
    Transgender,
}

fn police_crime(
    w: &World<'_>,
    i: u64,
    rng: &mut StdRng,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    let ev = &w.cfg.events;
    let link = w.police_link(i);
    let mut victims: Vec<usize> = Vec::new();
    let mut suspect: Option<usize> = None;
    let mut da = false;
    let mut hate: Option<Hate> = None;
    let mut relationship = "Not known";
    let mut at = w.moment(rng, &NIGHT);
    let mut location_lsoa: Option<u16> = None;
    let mut location_type: &'static str = "Street/road";
    let offence: &Offence = match &link {
        PoliceLink::Reoffence(r) => {
            suspect = Some(r.person);
            at = PrimitiveDateTime::new(r.date, at.time());
            let off = crime::by_code(r.code).unwrap_or(&crime::GENERAL[0]);
            if off.person_victim
                && let Some(v) = w.pools.victims.pick(rng)
            {
                victims.push(v as usize);
            }
            relationship = weighted(
                rng,
                &[("Stranger", 6), ("Acquaintance", 3), ("Not known", 1)],
            );
            off
        }
        PoliceLink::Assault(a) => {
            victims.push(a.person);
            at = a.at;
            location_lsoa = Some(a.lsoa);
            location_type = match a.location {
                "02" => "Licensed premises",
                "03" | "04" => "Dwelling",
                "05" => "Workplace",
                "06" => "Educational",
                "07" => "Public transport",
                _ => "Street/road",
            };
            if rng.random_bool(ev.suspect_identified) {
                suspect = w.pools.offenders.pick(rng).map(|x| x as usize);
            }
            relationship = weighted(
                rng,
                &[("Stranger", 5), ("Acquaintance", 3), ("Not known", 2)],
            );
            let code = match a.method {
                "03" | "05" => "5D",
                "01" if rng.random_bool(0.4) => "105A",
                _ => "8N",
            };
            crime::by_code(code).unwrap_or(&crime::GENERAL[0])
        }
        PoliceLink::None => {
            let u: f64 = rng.random();
            if u < ev.da_share && !w.pools.da_victims.is_empty() {
                da = true;
                let v = w.pools.da_victims.pick(rng).map(|x| x as usize);
                if let Some(v) = v {
                    victims.push(v);
                    let partner = w.people[v].traits.partner.map(|p| p as usize);
                    let abuser =
                        partner.filter(|p| w.people[*p].traits.flags & DA_PERPETRATOR != 0);
                    suspect = abuser.or_else(|| w.pools.offenders.pick(rng).map(|x| x as usize));
                    relationship = if abuser.is_some() {
                        weighted(rng, &[("Partner", 7), ("Ex-partner", 2)])
                    } else {
                        weighted(rng, &[("Ex-partner", 6), ("Family", 4)])
                    };
                    location_lsoa = Some(w.people[v].lsoa);
                    location_type = "Dwelling";
                }
                crime::pick(&crime::DOMESTIC, rng)
            } else if u < ev.da_share + ev.hate_share {
                let strand = weighted(rng, &[(0u8, 70), (1, 12), (2, 13), (3, 7), (4, 3)]);
                hate = Some(match strand {
                    0 => Hate::Race,
                    1 => Hate::Religion(weighted(rng, &[(0u8, 45), (1, 35), (2, 20)])),
                    2 => Hate::SexualOrientation,
                    3 => Hate::Disability,
                    _ => Hate::Transgender,
                });
                if let Some(v) = w.pools.victims.pick(rng) {
                    victims.push(v as usize);
                }
                if rng.random_bool(ev.suspect_identified) {
                    suspect = w.pools.offenders.pick(rng).map(|x| x as usize);
                }
                relationship = weighted(
                    rng,
                    &[("Stranger", 6), ("Acquaintance", 3), ("Not known", 1)],
                );
                if matches!(hate, Some(Hate::Race | Hate::Religion(_))) {
                    crime::pick(&crime::AGGRAVATED, rng)
                } else {
                    crime::pick(&crime::HATE_OTHER, rng)
                }
            } else {
                let off = crime::pick(&crime::GENERAL, rng);
                if off.person_victim {
                    let n = if rng.random_bool(0.05) { 2 } else { 1 };
                    for _ in 0..n {
                        if let Some(v) = w.pools.victims.pick(rng) {
                            victims.push(v as usize);
                        }
                    }
                }
                if !off.person_victim || rng.random_bool(ev.suspect_identified) {
                    suspect = w.pools.offenders.pick(rng).map(|x| x as usize);
                }
                relationship = weighted(
                    rng,
                    &[
                        ("Stranger", 5),
                        ("Acquaintance", 3),
                        ("Family", 1),
                        ("Not known", 2),
                    ],
                );
                location_type = match off.group {
                    "Burglary" => "Dwelling",
                    "Vehicle offences" => weighted(rng, &[("Street/road", 6), ("Car park", 3)]),
                    _ if off.code == "46" => "Retail",
                    _ if off.code == "58A" => "Dwelling",
                    _ => weighted(
                        rng,
                        &[
                            ("Street/road", 40),
                            ("Licensed premises", 10),
                            ("Retail", 10),
                            ("Public transport", 6),
                            ("Park/open space", 8),
                            ("Workplace", 6),
                            ("Educational", 4),
                            ("Online", 6),
                            ("Other", 10),
                        ],
                    ),
                };
                if location_type == "Dwelling"
                    && let Some(v) = victims.first()
                {
                    location_lsoa = Some(w.people[*v].lsoa);
                }
                off
            }
        }
    };
    let location_lsoa =
        location_lsoa.unwrap_or_else(|| w.pools.places.pick(rng).unwrap_or(0) as u16);
    let committed_to = rng
        .random_bool(0.6)
        .then(|| dt_plus(at, rng.random_range(5..240)));
    let reported = dt_plus(at, rng.random_range(10..2880));
    let crime_ref = format!("{}/{:02}", 5_200_001 + i, at.year() % 100);
    let knife_p = match offence.code {
        "10A" => 1.0,
        "5D" => 0.45,
        "34B" => 0.25,
        "8N" | "3B" => 0.12,
        _ => 0.0,
    };
    let knife = rng.random_bool(knife_p);
    let firearm = offence.violent && rng.random_bool(0.002);
    let online = matches!(offence.code, "8R" | "8L" | "8Q" | "8M") && rng.random_bool(0.5);
    let weapon = if knife {
        "Knife"
    } else if firearm {
        "Firearm"
    } else if offence.violent && !offence.sexual && offence.group != "Stalking and harassment" {
        weighted(
            rng,
            &[
                ("Body part", 70),
                ("Bottle/glass", 10),
                ("Blunt", 9),
                ("Other", 8),
                ("Corrosive", 1),
            ],
        )
    } else {
        "None"
    };
    let outcome_present = rng.random_bool(0.8);
    let outcome_date = date_plus(at.date(), rng.random_range(7..150));

    // A suspect picked as their own victim is dropped.
    if let Some(s) = suspect {
        victims.retain(|v| *v != s);
    }
    let n_victims = victims.len().max(1);
    for vno in 0..n_victims {
        row.clear();
        row.set("crime_ref", Val::T(crime_ref.clone()));
        row.set("victim_no", Val::I(vno as i64 + 1));
        row.set("ho_offence_code", Val::S(offence.code));
        row.set("ho_offence_class", Val::S(offence.class));
        row.set("ho_offence_group", Val::S(offence.group));
        if !offence.cjs.is_empty() {
            row.set("cjs_offence_code", Val::S(offence.cjs));
        }
        row.set("committed_from", Val::Dt(at));
        row.opt("committed_to", committed_to.map(Val::Dt));
        row.set("reported_dt", Val::Dt(reported));
        let place_addr = if location_type == "Dwelling" {
            victims
                .get(vno)
                .map(|v| u64::from(w.people[*v].household))
                .unwrap_or(i)
        } else {
            i.wrapping_mul(0x9E37)
        };
        if location_type != "Online" {
            row.set(
                "location_postcode",
                Val::T(geography::postcode(usize::from(location_lsoa), place_addr)),
            );
            if rng.random_bool(0.6) {
                row.set("location_uprn", Val::I(geography::uprn(place_addr) as i64));
            }
        }
        lsoa_fields(row, location_lsoa, "lsoa21cd", Some("wd22cd"));
        row.set("location_type", Val::S(location_type));
        let mut young = false;
        if let Some(v) = victims.get(vno) {
            let r = w.put_person(row, Agency::Police, Role::Victim, &VICTIM, *v, rng, false);
            let a = age(r.dob, at.date());
            young |= a < 25;
            row.set("victim_age", Val::I(i64::from(a)));
            row.set("victim_ethnicity_sde", Val::S(ethnicity(w, *v, rng)));
        }
        if let Some(s) = suspect {
            let r = w.put_person(row, Agency::Police, Role::Suspect, &SUSPECT, s, rng, false);
            let a = age(r.dob, at.date());
            young |= a < 25;
            row.set("suspect_age", Val::I(i64::from(a)));
            let ic = if rng.random_bool(0.1) {
                "IC9"
            } else {
                ETHNICITIES[usize::from(w.people[s].ethnicity)].ic
            };
            row.set("suspect_ethnicity_ode", Val::S(ic));
            row.set("victim_suspect_relationship", Val::S(relationship));
        }
        row.set("da_flag", Val::B(da));
        row.set("hate_race", Val::B(hate == Some(Hate::Race)));
        row.set(
            "hate_religion",
            Val::B(matches!(hate, Some(Hate::Religion(_)))),
        );
        row.set(
            "hate_sexual_orientation",
            Val::B(hate == Some(Hate::SexualOrientation)),
        );
        row.set("hate_disability", Val::B(hate == Some(Hate::Disability)));
        row.set("hate_transgender", Val::B(hate == Some(Hate::Transgender)));
        row.set("hate_antisemitic", Val::B(hate == Some(Hate::Religion(1))));
        row.set("hate_islamophobic", Val::B(hate == Some(Hate::Religion(2))));
        row.set("knife_flag", Val::B(knife));
        row.set("firearm_flag", Val::B(firearm));
        let child_victim = victims
            .get(vno)
            .is_some_and(|v| w.people[*v].age_on(at.date()) < 18);
        row.set(
            "cse_flag",
            Val::B(offence.sexual && child_victim && rng.random_bool(0.3)),
        );
        row.set("csa_flag", Val::B(offence.sexual && child_victim));
        row.set("online_flag", Val::B(online));
        row.set("modern_slavery_flag", Val::B(false));
        row.set("weapon_type", Val::S(weapon));
        if outcome_present {
            let outcome = match (&link, suspect) {
                (PoliceLink::Reoffence(_), _) => "1",
                (_, None) => weighted(rng, &[("18", 8), ("14", 2)]),
                (_, Some(s)) if w.people[s].age_on(at.date()) < 18 => {
                    weighted(rng, &[("2", 3), ("8", 3), ("22", 2), ("16", 2)])
                }
                _ if da => weighted(
                    rng,
                    &[("1", 12), ("15", 20), ("16", 55), ("21", 5), ("3", 8)],
                ),
                _ => weighted(
                    rng,
                    &[
                        ("1", 18),
                        ("3", 4),
                        ("8", 8),
                        ("15", 22),
                        ("16", 38),
                        ("21", 5),
                        ("20", 5),
                    ],
                ),
            };
            row.set("outcome_code", Val::S(outcome));
            row.set("outcome_date", Val::D(outcome_date));
        }
        let sv = crime::SERIOUS_VIOLENCE.contains(&offence.code) && (young || da || offence.sexual);
        row.set("sv_flag", Val::B(sv));
        if !emit(row)? {
            break;
        }
    }
    Ok(())
}

const CALLER: PersonFields = PersonFields {
    role: "caller",
    surname: "caller_surname",
    forename: "caller_forename",
    dob: "caller_dob",
    sex: "caller_sex",
    pnc: None,
    nhs: None,
};

const ASB_HEADINGS: &[(&str, u32)] = &[
    ("Rowdy or inconsiderate behaviour", 40),
    ("Rowdy/nuisance neighbours", 14),
    ("Vehicle nuisance/inappropriate use", 9),
    ("Noise", 8),
    ("Littering/drug paraphernalia", 6),
    ("Street drinking", 4),
    ("Begging/vagrancy", 4),
    ("Trespass", 3),
    ("Malicious/nuisance communications", 3),
    ("Animal problems", 3),
    ("Vehicle abandoned (not stolen)", 3),
    ("Fireworks", 2),
    ("Prostitution-related activity", 1),
];

fn police_asb(
    w: &World<'_>,
    i: u64,
    rng: &mut StdRng,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    row.clear();
    let at = w.moment(rng, &DAY);
    let heading = weighted(rng, ASB_HEADINGS);
    let qualifier = match heading {
        "Rowdy/nuisance neighbours" | "Malicious/nuisance communications" => {
            weighted(rng, &[("Personal", 6), ("Nuisance", 4)])
        }
        "Littering/drug paraphernalia" | "Vehicle abandoned (not stolen)" => "Environmental",
        _ => weighted(
            rng,
            &[("Nuisance", 8), ("Personal", 1), ("Environmental", 1)],
        ),
    };
    const MONTHS: [&str; 12] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    row.set(
        "cad_ref",
        Val::T(format!(
            "CAD{}/{:02}{}{:02}",
            i + 1,
            at.day(),
            MONTHS[usize::from(u8::from(at.month())) - 1],
            at.year() % 100
        )),
    );
    row.set("incident_dt", Val::Dt(at));
    row.set("asb_heading", Val::S(heading));
    row.set("nsir_qualifier", Val::S(qualifier));
    let caller = (!rng.random_bool(w.cfg.events.asb_anonymous))
        .then(|| w.pools.asb_callers.pick(rng))
        .flatten()
        .map(|x| x as usize);
    let lsoa = match caller {
        Some(c) if rng.random_bool(0.6) => w.people[c].lsoa,
        _ => w.pools.places.pick(rng).unwrap_or(0) as u16,
    };
    let addr = i.wrapping_mul(0x51_7cc1);
    row.set(
        "location_postcode",
        Val::T(geography::postcode(usize::from(lsoa), addr)),
    );
    if rng.random_bool(0.4) {
        row.set("location_uprn", Val::I(geography::uprn(addr) as i64));
    }
    lsoa_fields(row, lsoa, "lsoa21cd", Some("wd22cd"));
    if let Some(c) = caller {
        w.put_person(row, Agency::Police, Role::Victim, &CALLER, c, rng, false);
        if rng.random_bool(0.3) {
            row.unset("caller_dob");
            // `put_person` pushed the caller's truth row last. Missing, not an error of the
            // error model: set at this rate even when every error rate is zero.
            if let Some(t) = row.truth.last_mut() {
                t.errors |= error::DOB_MISSING;
            }
        }
        let expected = f64::from(w.people[c].traits.asb);
        row.set(
            "repeat_caller_count_12m",
            Val::I((expected * rng.random::<f64>() * 2.0).floor() as i64),
        );
        let vulnerable = w.people[c].traits.flags & VULNERABLE != 0 || rng.random_bool(0.05);
        row.set("vulnerable_victim_flag", Val::B(vulnerable));
    }
    emit(row)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Council

const ASB_VICTIM: PersonFields = PersonFields {
    role: "victim",
    surname: "victim_surname",
    forename: "victim_forename",
    dob: "victim_dob",
    sex: "victim_sex",
    pnc: None,
    nhs: None,
};
const ASB_PERP: PersonFields = PersonFields {
    role: "perpetrator",
    surname: "perpetrator_surname",
    forename: "perpetrator_forename",
    dob: "perpetrator_dob",
    sex: "perpetrator_sex",
    pnc: None,
    nhs: None,
};

fn council_asb(
    w: &World<'_>,
    i: u64,
    rng: &mut StdRng,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    row.clear();
    let opened = w.day(rng);
    row.set(
        "asb_case_id",
        Val::T(format!("ASB-{:02}-{:04}", opened.year() % 100, i + 1)),
    );
    row.set("opened", Val::D(opened));
    if rng.random_bool(0.6) {
        row.set(
            "closed",
            Val::D(date_plus(opened, rng.random_range(20..200))),
        );
    }
    let category = weighted(
        rng,
        &[
            ("Noise", 22),
            ("Harassment/intimidation", 15),
            ("Neighbour dispute", 15),
            ("Rowdy/nuisance behaviour", 12),
            ("Drug-related", 9),
            ("Criminal damage", 6),
            ("Hate-related", 4),
            ("Vehicle nuisance", 4),
            ("Fly-tipping/littering", 5),
            ("Animal-related", 3),
            ("Street drinking", 2),
            ("Other", 3),
        ],
    );
    row.set("category", Val::S(category));
    row.set(
        "nsir_qualifier",
        Val::S(if matches!(category, "Fly-tipping/littering") {
            "Environmental"
        } else {
            weighted(rng, &[("Personal", 6), ("Nuisance", 4)])
        }),
    );
    row.set(
        "tenure",
        Val::S(weighted(
            rng,
            &[
                ("Council tenant", 30),
                ("RSL", 20),
                ("Private", 25),
                ("Owner", 20),
                ("Not known", 5),
            ],
        )),
    );
    const INTERVENTIONS: &[&str] = &[
        "Warning letter",
        "Mediation",
        "ABC",
        "CPN warning",
        "CPN",
        "Civil injunction",
        "Criminal behaviour order",
        "Closure order",
        "Possession proceedings",
        "Community Trigger",
    ];
    let mut set: Vec<&'static str> = Vec::new();
    for (k, p) in [
        (0, 0.6),
        (1, 0.2),
        (2, 0.15),
        (3, 0.1),
        (4, 0.04),
        (5, 0.04),
        (6, 0.01),
        (7, 0.01),
        (8, 0.02),
        (9, 0.01),
    ] {
        if rng.random_bool(p) {
            set.push(INTERVENTIONS[k]);
        }
    }
    row.set("interventions", Val::Set(set));
    let victim = w
        .pools
        .asb_callers
        .pick(rng)
        .or_else(|| w.pools.victims.pick(rng))
        .map(|x| x as usize);
    let mut lsoa = w.pools.places.pick(rng).unwrap_or(0) as u16;
    let mut addr = i;
    if let Some(v) = victim {
        let r = w.put_person(
            row,
            Agency::Council,
            Role::Victim,
            &ASB_VICTIM,
            v,
            rng,
            false,
        );
        lsoa = r.lsoa;
        addr = r.address;
    }
    row.set(
        "location_postcode",
        Val::T(geography::postcode(usize::from(lsoa), addr)),
    );
    if rng.random_bool(0.7) {
        row.set("location_uprn", Val::I(geography::uprn(addr) as i64));
    }
    lsoa_fields(row, lsoa, "lsoa21cd", None);
    if rng.random_bool(0.6)
        && let Some(p) = w.pools.offenders.pick(rng)
        && Some(p as usize) != victim
    {
        let r = w.put_person(
            row,
            Agency::Council,
            Role::Suspect,
            &ASB_PERP,
            p as usize,
            rng,
            false,
        );
        row.set("perpetrator_age", Val::I(i64::from(age(r.dob, opened))));
    }
    emit(row)?;
    Ok(())
}

const HCLIC_PERSON: PersonFields = PersonFields {
    role: "person",
    surname: "surname",
    forename: "forename",
    dob: "dob",
    sex: "sex",
    pnc: None,
    nhs: Some("nhs_number"),
};

fn hclic(
    w: &World<'_>,
    c: u64,
    rng: &mut StdRng,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    let Some(lead) = w.pools.homeless.pick(rng).map(|x| x as usize) else {
        return Ok(());
    };
    let lp = &w.people[lead];
    let approach = w.day(rng);
    let reason = if lp.traits.flags & DA_VICTIM != 0 && rng.random_bool(0.8) {
        "Domestic abuse"
    } else if lp.traits.offending > 0.0 && rng.random_bool(0.35) {
        "Left institution (prison/hospital/care)"
    } else {
        weighted(
            rng,
            &[
                ("End of AST", 25),
                ("Family/friends no longer willing", 25),
                ("Relationship breakdown (non-violent)", 12),
                ("End of social rented tenancy", 4),
                ("Other violence/harassment", 4),
                ("Eviction from supported housing", 4),
                ("Mortgage repossession/home sold", 2),
                ("Left Home Office asylum support", 3),
                ("End of non-AST private tenancy", 4),
                ("Other", 12),
                ("Not known", 5),
            ],
        )
    };
    // The household that approaches: everyone but an abusive partner.
    let members: Vec<usize> = std::iter::once(lead)
        .chain(w.household_of(lead).filter(|m| *m != lead))
        .filter(|m| {
            !(reason == "Domestic abuse" && w.people[*m].traits.flags & DA_PERPETRATOR != 0)
        })
        .take(6)
        .collect();
    let adults = members
        .iter()
        .filter(|m| w.people[**m].age_on(approach) >= 18)
        .count();
    let kids = members.len() - adults;
    let household_type = match (adults, kids, lp.female()) {
        (1, 0, true) => "Single adult female",
        (1, 0, false) => "Single adult male",
        (1, _, true) => "Single parent female with dependent children",
        (1, _, false) => "Single parent male with dependent children",
        (2, 0, _) => "Couple without dependent children",
        (2, _, _) => "Couple with dependent children",
        (_, 0, _) => "Three or more adults without dependent children",
        _ => "Three or more adults with dependent children",
    };
    let duty = weighted(
        rng,
        &[
            ("Prevention", 45),
            ("Relief", 40),
            ("Main duty", 8),
            ("Not threatened", 5),
            ("Not eligible", 2),
        ],
    );
    let accommodation = match reason {
        "Left institution (prison/hospital/care)" => weighted(
            rng,
            &[("Custody", 6), ("Hospital", 1), ("No fixed abode", 3)],
        ),
        "Domestic abuse" => weighted(
            rng,
            &[
                ("Living with family", 3),
                ("Social rented", 3),
                ("Private rented", 3),
                ("Living with friends", 2),
            ],
        ),
        _ => weighted(
            rng,
            &[
                ("Private rented", 30),
                ("Living with family", 25),
                ("Living with friends", 12),
                ("Social rented", 10),
                ("No fixed abode", 6),
                ("Rough sleeping", 3),
                ("Supported housing/hostel", 5),
                ("Temporary accommodation", 4),
                ("Other", 3),
                ("Not known", 2),
            ],
        ),
    };
    let ta = rng.random_bool(if kids > 0 { 0.5 } else { 0.2 });
    let case_id = format!("KNG-HR-{}-{:06}", approach.year(), c + 1);
    for (no, m) in members.iter().enumerate() {
        row.clear();
        row.set("case_id", Val::T(case_id.clone()));
        row.set("person_no", Val::I(no as i64 + 1));
        row.set("approach_date", Val::D(approach));
        row.set("household_type", Val::S(household_type));
        row.set("duty_owed", Val::S(duty));
        row.set("reason_loss_settled_home", Val::S(reason));
        row.set("accommodation_at_approach", Val::S(accommodation));
        row.set("ta_placed", Val::B(ta));
        let r = w.put_person(
            row,
            Agency::Council,
            Role::Other,
            &HCLIC_PERSON,
            *m,
            rng,
            false,
        );
        if rng.random_bool(0.8) {
            row.set(
                "last_settled_uprn",
                Val::I(geography::uprn(r.address) as i64),
            );
        }
        lsoa_fields(row, r.lsoa, "lsoa21cd", None);
        let a = age(r.dob, approach);
        row.set("age_at_approach", Val::I(i64::from(a)));
        row.set("ethnicity", Val::S(ethnicity(w, *m, rng)));
        let p = &w.people[*m];
        let mut needs: Vec<&'static str> = Vec::new();
        if p.traits.flags & DA_VICTIM != 0 && reason == "Domestic abuse" {
            needs.push("DA victim");
        }
        if p.traits.offending > 0.0 && a >= 18 {
            needs.push("Offending history");
        }
        if p.traits.flags & VULNERABLE != 0 {
            needs.push("History of mental health problems");
        }
        if (18..=25).contains(&a) && rng.random_bool(0.3) {
            needs.push("Young person 18-25 needing support");
        }
        if (16..=17).contains(&a) {
            needs.push("Young person 16-17");
        }
        if a >= 18 && rng.random_bool(0.08) {
            needs.push(weighted(
                rng,
                &[
                    ("Physical ill health or disability", 4),
                    ("Drug dependency", 2),
                    ("Alcohol dependency", 2),
                    ("Repeat homelessness", 2),
                    ("Rough sleeping history", 1),
                    ("Access to education/employment/training", 2),
                    ("Old age", 1),
                ],
            ));
        }
        if a >= 16 {
            row.set("support_needs", Val::Set(needs));
        }
        if !emit(row)? {
            break;
        }
    }
    Ok(())
}

/// Role name of the child in council_csc_flags.
const CHILD_ROLE: &str = "child";

/// Snapshots per child (quarterly).
const SNAPSHOTS: u64 = 4;

fn csc(
    w: &World<'_>,
    _child_no: u64,
    rng: &mut StdRng,
    st: &mut GenState,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    // One child per event, never twice in a round (keeps child_id × as_at_date unique).
    let pool = &w.pools.children;
    if pool.is_empty() {
        return Ok(());
    }
    let mut child = None;
    for _ in 0..20 {
        if let Some(c) = pool.pick(rng)
            && !st.seen.contains(&u64::from(c))
        {
            child = Some(c as usize);
            break;
        }
    }
    let child = match child {
        Some(c) => c,
        None => {
            // The pool is exhausted for this round: start another, with shifted dates.
            st.seen.clear();
            st.round += 1;
            pool.pick(rng).map(|c| c as usize).unwrap_or(0)
        }
    };
    st.seen.insert(child as u64);
    let p = &w.people[child];
    let household = w.household_of(child);
    let da_home = household
        .clone()
        .any(|m| w.people[m].traits.flags & DA_VICTIM != 0);
    let offender_home = household
        .clone()
        .any(|m| m != child && w.people[m].traits.offending > 0.0);
    let span = (w.cfg.to.to_julian_day() - w.cfg.from.to_julian_day()).max(4) as i64;
    let record = w.record_for(Agency::SocialCare, child, rng);
    let r = w.recorded(Agency::SocialCare, Role::Other, child, record, false);
    let cp = rng.random_bool(if da_home { 0.3 } else { 0.12 });
    let cla = rng.random_bool(0.08);
    let teen = p.age_on(w.cfg.from) >= 12;
    let mut factors: Vec<&'static str> = Vec::new();
    if da_home {
        factors.push(weighted(rng, &[("3A", 2), ("3B", 6), ("3C", 2)]));
    }
    if offender_home && rng.random_bool(0.3) {
        factors.push("2B");
    }
    for (f, pr) in [
        ("16A", 0.2),
        ("17A", 0.15),
        ("4B", 0.15),
        ("1B", 0.08),
        ("18A", 0.06),
        ("19A", 0.03),
        ("5A", 0.05),
        ("6A", 0.04),
    ] {
        if rng.random_bool(pr) {
            factors.push(f);
        }
    }
    let missing = teen && rng.random_bool(0.15);
    if missing {
        factors.push("10A");
    }
    if teen && p.female() && rng.random_bool(0.06) {
        factors.push("11A");
    }
    if teen && !p.female() && rng.random_bool(0.07) {
        factors.push("24A");
    }
    if teen && rng.random_bool(0.04) {
        factors.push("13A");
    }
    factors.sort_unstable();
    factors.dedup();
    let yot = p.traits.offending > 0.0 || (teen && rng.random_bool(0.04));
    let episodes = if missing { rng.random_range(1..8) } else { 0 };
    for q in 0..SNAPSHOTS as i64 {
        row.clear();
        let as_at = date_plus(w.cfg.from, q * span / SNAPSHOTS as i64 + st.round);
        row.set(
            "child_id",
            Val::T(super::identifiers::child_id(p.id, record)),
        );
        row.set("as_at_date", Val::D(as_at));
        if let Some(n) = &r.nhs {
            row.set("nhs_number", Val::Nhs(n.clone()));
        }
        row.set("surname", Val::T(r.surname.clone()));
        row.set("forename", Val::T(r.forename.clone()));
        row.set("dob", Val::D(r.dob));
        row.set("sex", Val::S(r.sex));
        let a = age(r.dob, as_at);
        row.set(
            "age_band_at_date",
            Val::S(match a {
                i32::MIN..=9 => "0-9",
                10..=14 => "10-14",
                15..=17 => "15-17",
                _ => "18-24",
            }),
        );
        row.set(
            "home_postcode",
            Val::T(geography::postcode(usize::from(r.lsoa), r.address)),
        );
        lsoa_fields(row, r.lsoa, "home_lsoa21cd", None);
        let leaver = a >= 18;
        row.set("cin_status", Val::B(!leaver));
        row.set("cp_plan", Val::B(cp && !leaver));
        row.set("cla", Val::B(cla && !leaver));
        row.set("care_leaver", Val::B(leaver));
        row.set("cin_factors", Val::Set(factors.clone()));
        row.set("missing_episodes_12m", Val::I(episodes));
        row.set("yot_known", Val::B(yot));
        row.truth.push(super::world::TruthRole {
            role: CHILD_ROLE,
            person: p.id,
            record,
            errors: r.errors,
        });
        if !emit(row)? {
            break;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// LFB

fn lfb(
    w: &World<'_>,
    i: u64,
    rng: &mut StdRng,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    row.clear();
    let at = w.moment(rng, &DAY);
    let lsoa = w.pools.places.pick(rng).unwrap_or(0) as u16;
    let l = &lsoas()[usize::from(lsoa) % lsoas().len()];
    let group = weighted(
        rng,
        &[("Fire", 27), ("Special Service", 30), ("False Alarm", 43)],
    );
    let stop = match group {
        "Fire" => weighted(
            rng,
            &[
                ("Primary Fire", 48),
                ("Secondary Fire", 47),
                ("Chimney Fire", 2),
                ("Late Call", 3),
            ],
        ),
        "Special Service" => weighted(
            rng,
            &[
                ("Special Service", 98),
                ("Flood call attended - Batch mobilised", 2),
            ],
        ),
        _ => weighted(
            rng,
            &[
                ("AFA", 62),
                ("False alarm - Good intent", 33),
                ("False alarm - Malicious", 5),
            ],
        ),
    };
    let category = match stop {
        "Primary Fire" | "Late Call" => weighted(
            rng,
            &[
                ("Dwelling", 45),
                ("Road Vehicle", 20),
                ("Non Residential", 20),
                ("Other Residential", 5),
                ("Outdoor Structure", 10),
            ],
        ),
        "Secondary Fire" => weighted(
            rng,
            &[
                ("Outdoor", 70),
                ("Outdoor Structure", 25),
                ("Road Vehicle", 5),
            ],
        ),
        "Chimney Fire" => "Dwelling",
        "AFA" => weighted(
            rng,
            &[
                ("Non Residential", 50),
                ("Dwelling", 35),
                ("Other Residential", 15),
            ],
        ),
        "False alarm - Good intent" => weighted(
            rng,
            &[("Dwelling", 40), ("Outdoor", 30), ("Non Residential", 30)],
        ),
        "False alarm - Malicious" => weighted(
            rng,
            &[("Outdoor", 50), ("Dwelling", 30), ("Non Residential", 20)],
        ),
        _ => weighted(
            rng,
            &[
                ("Dwelling", 45),
                ("Road Vehicle", 20),
                ("Non Residential", 15),
                ("Outdoor", 20),
            ],
        ),
    };
    let property_type = match category {
        "Dwelling" => weighted(
            rng,
            &[
                ("House - single occupancy", 45),
                ("Purpose Built Flats/Maisonettes - Up to 3 storeys", 25),
                ("Purpose Built Flats/Maisonettes - 4 to 9 storeys", 15),
                ("Converted Flat/Maisonette - multiple occupancy", 10),
                ("Self contained Sheltered Housing", 5),
            ],
        ),
        "Road Vehicle" => weighted(
            rng,
            &[
                ("Car", 70),
                ("Van", 15),
                ("Motorcycle", 10),
                ("Bus/coach", 5),
            ],
        ),
        "Non Residential" => weighted(
            rng,
            &[
                ("Restaurant/cafe", 20),
                ("Retail - single shop", 25),
                ("Offices and call centres", 20),
                ("Schools", 10),
                ("Hospital", 5),
                ("Pub/wine bar/bar", 10),
                ("Warehouse", 10),
            ],
        ),
        "Other Residential" => weighted(
            rng,
            &[
                ("Student Hall of Residence", 40),
                ("Hotel/motel", 30),
                ("Nursing/Care Home/Hospice", 30),
            ],
        ),
        "Outdoor Structure" => weighted(
            rng,
            &[
                ("Refuse/rubbish tip", 30),
                ("Wheelie Bin", 40),
                ("Fence", 20),
                ("Shed", 10),
            ],
        ),
        _ => weighted(
            rng,
            &[
                ("Road surface/pavement", 40),
                ("Loose refuse", 25),
                ("Grassland, pasture, grazing etc", 20),
                ("Tree scrub", 15),
            ],
        ),
    };
    let date = at.date();
    row.set(
        "incident_number",
        Val::T(format!(
            "{:06}-{:02}{:02}{}",
            i + 1,
            date.day(),
            u8::from(date.month()),
            date.year()
        )),
    );
    row.set("date_of_call", Val::D(date));
    row.set("hour_of_call", Val::I(i64::from(at.hour())));
    row.set("incident_group", Val::S(group));
    row.set("stop_code_description", Val::S(stop));
    if group == "Special Service" {
        row.set(
            "special_service_type",
            Val::S(weighted(
                rng,
                &[
                    ("Effecting entry/exit", 20),
                    ("Lift Release", 12),
                    ("RTC", 12),
                    ("Flooding", 12),
                    ("Assist other agencies", 10),
                    ("Medical Incident", 6),
                    ("Making Safe (not RTC)", 5),
                    ("Removal of objects from people", 4),
                    ("Animal assistance incidents", 4),
                    ("Advice Only", 3),
                    ("Other rescue/release of persons", 3),
                    ("No action (not false alarm)", 4),
                    ("Suicide/attempts", 1),
                    ("Hazardous Materials incident", 1),
                    ("Spills and Leaks (not RTC)", 2),
                    ("Rescue or evacuation from water", 1),
                ],
            )),
        );
    }
    row.set("property_category", Val::S(category));
    row.set("property_type", Val::S(property_type));
    if group == "Fire" {
        let motive = if stop == "Secondary Fire" {
            weighted(
                rng,
                &[
                    ("Deliberate - unknown owner", 45),
                    ("Accidental", 35),
                    ("Deliberate - others' property", 10),
                    ("Not known", 10),
                ],
            )
        } else {
            weighted(
                rng,
                &[
                    ("Accidental", 75),
                    ("Deliberate - others' property", 10),
                    ("Deliberate - own property", 3),
                    ("Deliberate - unknown owner", 7),
                    ("Not known", 5),
                ],
            )
        };
        row.set("fire_motive", Val::S(motive));
    }
    let addr = i.wrapping_mul(0x2545_F491);
    let dwelling = category == "Dwelling";
    if dwelling || rng.random_bool(0.7) {
        row.set(
            "postcode_full",
            Val::T(geography::postcode(usize::from(lsoa), addr)),
        );
    }
    if rng.random_bool(if dwelling { 0.8 } else { 0.5 }) {
        row.set("uprn", Val::I(geography::uprn(addr) as i64));
    }
    row.set("wd22cd", Val::S(l.ward));
    row.set("lsoa21cd", Val::S(l.code));
    row.set("incident_station_ground", Val::S(l.station));
    if rng.random_bool(0.95) {
        let t = (240.0 * (1.0 + 0.35 * (rng.random::<f64>() + rng.random::<f64>() - 1.0) * 2.0))
            .max(60.0);
        row.set("first_pump_arriving_attendance_time", Val::I(t as i64));
    }
    let pumps = if group == "Fire" {
        weighted(rng, &[(1, 50), (2, 40), (4, 8), (6, 2)])
    } else {
        weighted(rng, &[(1, 80), (2, 20)])
    };
    row.set("num_pumps_attending", Val::I(pumps));
    let casualties = if group == "Fire" && dwelling && rng.random_bool(0.06) {
        1
    } else {
        0
    };
    row.set("casualty_count", Val::I(casualties));
    row.set(
        "hfsv_referral_flag",
        Val::B(group == "Fire" && dwelling && rng.random_bool(0.3)),
    );
    emit(row)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Probation

const SUPERVISED: PersonFields = PersonFields {
    role: "person",
    surname: "surname",
    forename: "forename",
    dob: "dob",
    sex: "sex",
    pnc: Some("pnc_id"),
    nhs: None,
};

fn caseload(
    w: &World<'_>,
    c: u64,
    rng: &mut StdRng,
    st: &mut GenState,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    let Some(person) = w.supervised_person(c) else {
        return Ok(());
    };
    row.clear();
    let r = w.put_person(
        row,
        Agency::Probation,
        Role::Supervised,
        &SUPERVISED,
        person,
        rng,
        false,
    );
    let record = row.truth.last().map(|t| t.record).unwrap_or(0);
    let p = &w.people[person];
    let event_no = st.counters.entry(p.id * 4 + u64::from(record)).or_insert(0);
    *event_no += 1;
    row.set("crn", Val::T(super::identifiers::crn(p.id, record)));
    row.set("event_no", Val::I(*event_no));
    let start = date_plus(w.day(rng), -rng.random_range(0..365));
    row.set("start_date", Val::D(start));
    row.set(
        "end_date",
        Val::D(date_plus(start, rng.random_range(180..1100))),
    );
    row.set("age_at_start", Val::I(i64::from(age(r.dob, start))));
    row.set("ethnicity", Val::S(ethnicity(w, person, rng)));
    row.set(
        "home_postcode",
        Val::T(geography::postcode(usize::from(r.lsoa), r.address)),
    );
    lsoa_fields(row, r.lsoa, "home_lsoa21cd", None);
    row.set(
        "sentence_type",
        Val::S(weighted(
            rng,
            &[
                ("Community order", 45),
                ("Suspended sentence order", 20),
                ("Licence", 30),
                ("Post-sentence supervision", 5),
            ],
        )),
    );
    let da = p.traits.flags & DA_PERPETRATOR != 0;
    let off = if da {
        crime::pick(&crime::DOMESTIC, rng)
    } else {
        crime::pick(&crime::REOFFENCES, rng)
    };
    row.set("index_offence_ho_code", Val::S(off.code));
    row.set("index_offence_ho_group", Val::S(off.group));
    let legacy = rng.random_bool(0.5);
    let tier = if legacy {
        weighted(
            rng,
            &[
                ("A3", 2),
                ("A2", 2),
                ("B3", 4),
                ("B2", 6),
                ("B1", 4),
                ("C3", 6),
                ("C2", 8),
                ("C1", 6),
                ("D2", 6),
                ("D1", 6),
                ("D0", 3),
            ],
        )
    } else {
        weighted(
            rng,
            &[
                ("A", 3),
                ("B", 10),
                ("C", 20),
                ("D", 25),
                ("E", 15),
                ("F", 12),
                ("G", 10),
                ("NA", 5),
            ],
        )
    };
    row.set("tier", Val::S(tier));
    row.set(
        "rosh_level",
        Val::S(weighted(
            rng,
            &[("Low", 35), ("Medium", 45), ("High", 17), ("Very High", 3)],
        )),
    );
    let mappa = weighted(rng, &[("None", 90), ("1", 4), ("2", 5), ("3", 1)]);
    row.set("mappa_category", Val::S(mappa));
    row.set(
        "mappa_level",
        Val::S(if mappa == "None" {
            "None"
        } else {
            weighted(rng, &[("1", 85), ("2", 13), ("3", 2)])
        }),
    );
    row.set("da_perpetrator_flag", Val::B(da));
    row.set(
        "iom_nominal",
        Val::B(rng.random_bool(if p.traits.offending >= 10.0 {
            0.6
        } else {
            0.05
        })),
    );
    row.set(
        "ogrs_band",
        Val::S(weighted(
            rng,
            &[("Low", 30), ("Medium", 35), ("High", 25), ("Very High", 10)],
        )),
    );
    row.set(
        "rsr_band",
        Val::S(weighted(rng, &[("Low", 60), ("Medium", 30), ("High", 10)])),
    );
    let acc = &[
        ("Settled", 60),
        ("Transient/short-term", 15),
        ("NFA/rough sleeping", 8),
        ("Approved premises/CAS", 7),
        ("Custody", 5),
        ("Not known", 5),
    ];
    row.set("accommodation_start", Val::S(weighted(rng, acc)));
    row.set("accommodation_end", Val::S(weighted(rng, acc)));
    let emp = &[
        ("Employed full-time", 25),
        ("Employed part-time", 12),
        ("Unemployed - seeking work", 35),
        ("Not available for work", 15),
        ("In education/training", 5),
        ("Not known", 8),
    ];
    row.set("employment_start", Val::S(weighted(rng, emp)));
    row.set("employment_end", Val::S(weighted(rng, emp)));
    for need in [
        "need_accommodation",
        "need_ete",
        "need_relationships",
        "need_lifestyle",
        "need_drugs",
        "need_alcohol",
        "need_thinking",
        "need_attitudes",
    ] {
        row.set(
            need,
            Val::S(weighted(
                rng,
                &[("No need", 45), ("Standard", 35), ("Severe", 20)],
            )),
        );
    }
    emit(row)?;
    Ok(())
}

fn reoffending(
    w: &World<'_>,
    r: u64,
    rng: &mut StdRng,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    let Some(core) = w.reoffence(r) else {
        return Ok(());
    };
    let second = rng
        .random_bool(0.2)
        .then(|| crime::pick(&crime::REOFFENCES, rng).code);
    let asn = format!(
        "{:02}/01KT/01/{:06}{}",
        core.date.year() % 100,
        r + 1,
        (b'A' + (r % 26) as u8) as char
    );
    let disposal = weighted(rng, &[("Conviction", 70), ("Caution", 15), ("Charge", 15)]);
    let disposal_date = date_plus(core.date, rng.random_range(14..200));
    let record = w.record_for(Agency::Probation, core.person, rng);
    let rec = w.recorded(
        Agency::Probation,
        Role::Supervised,
        core.person,
        record,
        true,
    );
    if rec.pnc.is_none() {
        return Ok(()); // A PNC-linked extract only holds people with a PNC record.
    }
    for (seq, code) in std::iter::once(core.code).chain(second).enumerate() {
        row.clear();
        row.set("asn", Val::T(asn.clone()));
        row.set("offence_seq", Val::I(seq as i64 + 1));
        row.set("offence_date", Val::D(core.date));
        row.set("ho_offence_code", Val::S(code));
        row.set("disposal", Val::S(disposal));
        if disposal != "Charge" {
            row.set("disposal_date", Val::D(disposal_date));
        }
        if let Some(pnc) = &rec.pnc {
            row.set("pnc_id", Val::T(pnc.clone()));
        }
        row.set("surname", Val::T(rec.surname.clone()));
        row.set("forename", Val::T(rec.forename.clone()));
        row.set("dob", Val::D(rec.dob));
        row.set("sex", Val::S(rec.sex));
        row.truth.push(super::world::TruthRole {
            role: "person",
            person: w.people[core.person].id,
            record,
            errors: rec.errors,
        });
        if !emit(row)? {
            break;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Health

fn istv(
    w: &World<'_>,
    k: u64,
    rng: &mut StdRng,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    let Some(a) = w.assault(k) else {
        return Ok(());
    };
    row.clear();
    let arrival = dt_plus(a.at, rng.random_range(10..240));
    let month_start =
        Date::from_calendar_date(arrival.year(), arrival.month(), 1).unwrap_or(arrival.date());
    let next = if arrival.month() == time::Month::December {
        Date::from_calendar_date(arrival.year() + 1, time::Month::January, 1)
    } else {
        Date::from_calendar_date(arrival.year(), arrival.month().next(), 1)
    }
    .unwrap_or(month_start);
    row.set(
        "attendance_ref",
        Val::T(format!("RAX{}{:08}", arrival.year(), k + 1)),
    );
    row.set("reporting_period_start", Val::D(month_start));
    row.set(
        "reporting_period_end",
        Val::D(next.previous_day().unwrap_or(month_start)),
    );
    row.set("site_code_of_treatment", Val::S("RAX01"));
    if rng.random_bool(0.92) {
        row.set("arrival_dt", Val::Dt(arrival));
    }
    row.set("assault_dt", Val::Dt(a.at));
    row.set("assault_method", Val::S(a.method));
    if a.method == "98" {
        row.set(
            "assault_method_other_desc",
            Val::S(weighted(
                rng,
                &[
                    ("Scooter", 2),
                    ("Brick", 2),
                    ("Dog bite", 2),
                    ("Chair", 1),
                    ("Kicked while on ground", 3),
                ],
            )),
        );
    }
    row.set("assault_location_type", Val::S(a.location));
    let desc = match a.location {
        "01" => weighted(
            rng,
            &[
                ("outside station, Wood St", 3),
                ("Clarence St near the market", 3),
                ("bus stop, Kingston Rd", 2),
                ("Surbiton Crescent", 1),
                ("Eden St", 2),
            ],
        ),
        "02" => weighted(
            rng,
            &[
                ("outside nightclub, Clarence St", 4),
                ("pub, Market Place", 3),
                ("bar, Riverside Walk", 2),
            ],
        ),
        "03" => "Patient's home",
        "07" => weighted(rng, &[("on a bus", 3), ("Surbiton station platform", 2)]),
        _ => "",
    };
    if !desc.is_empty() {
        row.set("assault_location_desc", Val::S(desc));
    }
    lsoa_fields(row, a.lsoa, "location_lsoa21cd", None);
    let p = &w.people[a.person];
    let band = match p.age_on(a.at.date()) {
        i32::MIN..=9 => "0-9",
        10..=14 => "10-14",
        15..=17 => "15-17",
        18..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=54 => "45-54",
        55..=64 => "55-64",
        _ => "65+",
    };
    row.set("age_band", Val::S(band));
    row.set("sex", Val::S(p.sex));
    // Anonymous dataset: the patient is in the truth file only.
    row.truth.push(super::world::TruthRole {
        role: "patient",
        person: p.id,
        record: 0,
        errors: 0,
    });
    emit(row)?;
    Ok(())
}

const PATIENT: PersonFields = PersonFields {
    role: "patient",
    surname: "surname",
    forename: "forename",
    dob: "dob",
    sex: "sex",
    pnc: None,
    nhs: Some("nhs_number"),
};

fn icb(
    w: &World<'_>,
    e: u64,
    rng: &mut StdRng,
    row: &mut RowBuf<'_>,
    emit: &mut Emit<'_>,
) -> anyhow::Result<()> {
    let assault = if e.is_multiple_of(2) {
        w.assault(e / 2)
    } else {
        None
    };
    let (person, at, intent, mechanism) = match assault {
        Some(a) => {
            let mech = match a.method {
                "01" => "Body part",
                "02" => "Blunt",
                "03" | "04" => "Stab/cut",
                "05" => "Gunshot",
                "06" => "Corrosive/burn",
                "98" => "Other",
                _ => "Not known",
            };
            (
                a.person,
                dt_plus(a.at, rng.random_range(10..240)),
                "Assault",
                mech,
            )
        }
        None => {
            let Some(p) = w.pools.patients.pick(rng) else {
                return Ok(());
            };
            let intent = weighted(
                rng,
                &[("Accidental", 70), ("Self-harm", 25), ("Not known", 5)],
            );
            let mech = weighted(
                rng,
                &[
                    ("Blunt", 35),
                    ("Stab/cut", 15),
                    ("Other", 35),
                    ("Bite", 5),
                    ("Not known", 10),
                ],
            );
            (p as usize, w.moment(rng, &DAY), intent, mech)
        }
    };
    row.clear();
    row.set("attendance_ref", Val::T(format!("ECDS{:010}", e + 1)));
    row.set("attendance_dt", Val::Dt(at));
    row.set("injury_intent", Val::S(intent));
    row.set("injury_mechanism", Val::S(mechanism));
    row.set(
        "alcohol_drug_involvement",
        Val::S(weighted(
            rng,
            &[
                ("Alcohol", 25),
                ("Drugs", 5),
                ("Both", 5),
                ("None", 45),
                ("Not known", 20),
            ],
        )),
    );
    row.set(
        "disposal",
        Val::S(weighted(
            rng,
            &[
                ("Discharged", 70),
                ("Admitted", 18),
                ("Left before treatment", 6),
                ("Transferred", 3),
                ("Other", 3),
            ],
        )),
    );
    let r = w.put_person(
        row,
        Agency::Health,
        Role::Victim,
        &PATIENT,
        person,
        rng,
        false,
    );
    row.set(
        "age_at_attendance",
        Val::I(i64::from(age(r.dob, at.date()))),
    );
    let eth = ethnicity(w, person, rng);
    let letter = ETHNICITIES
        .iter()
        .find(|x| x.ons == eth)
        .map(|x| x.nhs)
        .unwrap_or("Z");
    row.set("ethnic_category", Val::S(letter));
    row.set(
        "home_postcode",
        Val::T(geography::postcode(usize::from(r.lsoa), r.address)),
    );
    lsoa_fields(row, r.lsoa, "home_lsoa21cd", None);
    let vulnerable = w.people[person].traits.flags & VULNERABLE != 0;
    let contacts = if vulnerable || intent == "Self-harm" {
        rng.random_range(1..12)
    } else if rng.random_bool(0.08) {
        rng.random_range(1..4)
    } else {
        0
    };
    row.set("mh_contact_12m", Val::I(contacts));
    if contacts > 0 {
        let a = w.people[person].age_on(at.date());
        row.set(
            "mh_service_type",
            Val::S(if a < 18 {
                "CAMHS"
            } else {
                weighted(
                    rng,
                    &[
                        ("Adult community MH", 5),
                        ("Crisis/HTT", 2),
                        ("Liaison psychiatry", 2),
                        ("Other", 1),
                    ],
                )
            }),
        );
    }
    emit(row)?;
    Ok(())
}
