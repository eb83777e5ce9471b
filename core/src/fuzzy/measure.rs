//! A measurement, not a test of speed: encodes synthetic people and prints throughput, the
//! per-slot agreement rates of true pairs (m) and random pairs (u), the Dice distributions and
//! how many true pairs a few blocking keys keep. Ignored by default (slow in a debug build):
//!
//! ```text
//! cargo test -p skp-core --release fuzzy::measure -- --ignored --nocapture
//! FUZZY_MEASURE_N=20000 cargo test -p skp-core --release fuzzy::measure -- --ignored --nocapture
//! ```
//!
//! The people and errors imitate the agent's synthetic generator (`agent synth`) at its default
//! error rates: typos 1.5 % per name, nicknames 4 %, swapped names 0.5 %, married-name change
//! 2 % (adult women), hyphenated surname 1 %, day/month swap 0.5 %, other date errors 0.5 %,
//! stale address 12 %.

use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Instant;

const SURNAMES: &str = "\
Smith, Jones, Williams, Taylor, Brown, Davies, Evans, Wilson, Thomas, Johnson, Roberts, \
Robinson, Thompson, Wright, Walker, White, Edwards, Hughes, Green, Hall, Lewis, Harris, \
Clarke, Patel, Jackson, Wood, Turner, Martin, Cooper, Hill, Ward, Morris, Moore, Clark, \
Lee, King, Baker, Harrison, Morgan, Allen, James, Scott, Phillips, Watson, Davis, Parker, \
Price, Bennett, Young, Griffiths, Mitchell, Kelly, Cook, Carter, Richardson, Bailey, \
Collins, Bell, Shaw, Murphy, Miller, Cox, Richards, Khan, Marshall, Anderson, Simpson, \
Ellis, Adams, Singh, Begum, Wilkinson, Foster, Chapman, Powell, Webb, Rogers, Gray, \
Mason, Ali, Hunt, Hussain, Campbell, Matthews, Owen, Palmer, Holmes, Mills, Barnes, \
Knight, Lloyd, Butler, Russell, Barker, Fisher, Stevens, Jenkins, Murray, Dixon, Harvey, \
Kim, Park, Choi, Nowak, Kowalski, Wisniewski, Okafor, Mensah, Osei, Ahmed, Rahman, Shah, \
Nguyen, Tran, O'Brien, O'Neil, McDonald, MacLeod, Da Silva, Santos, Fernandes, Kaur, \
Gill, Sandhu, Yilmaz, Demir, Popescu, Ivanova, Zhang, Wang, Li, Chen, Liu";

const FEMALE: &str = "\
Olivia, Amelia, Isla, Ava, Mia, Emily, Sophia, Grace, Lily, Freya, Ella, Charlotte, \
Sarah, Emma, Laura, Rebecca, Jessica, Hannah, Katherine, Elizabeth, Margaret, Susan, \
Jennifer, Victoria, Rachel, Nicola, Claire, Helen, Amy, Lucy, Fatima, Aisha, Priya, \
Zainab, Maria, Anna, Natalia, Mei, Ji-woo, Chloe, Zoe, Megan, Samantha, Louise, Gemma, \
Joanne, Deborah, Patricia, Angela, Ruth";

const MALE: &str = "\
Oliver, George, Noah, Arthur, Harry, Leo, Muhammad, Jack, Charlie, Oscar, James, William, \
Thomas, Daniel, Michael, David, Robert, Christopher, Matthew, Andrew, Richard, Joseph, \
Samuel, Alexander, Benjamin, Jonathan, Stephen, Paul, Mark, Peter, Ahmed, Mohammed, Ali, \
Omar, Kwame, Chinedu, Jakub, Piotr, Wei, Min-jun, Luke, Ryan, Adam, Liam, Nathan, Callum, \
Kieran, Jamie, Lewis, Connor";

static SURNAME_LIST: LazyLock<Vec<&str>> = LazyLock::new(|| list(SURNAMES));
static FEMALE_LIST: LazyLock<Vec<&str>> = LazyLock::new(|| list(FEMALE));
static MALE_LIST: LazyLock<Vec<&str>> = LazyLock::new(|| list(MALE));

const NICKNAMES: &[(&str, &[&str])] = &[
    ("Robert", &["Bob", "Rob", "Bobby"]),
    ("William", &["Bill", "Will", "Billy"]),
    ("Elizabeth", &["Liz", "Beth", "Lizzie"]),
    ("Margaret", &["Maggie", "Peggy"]),
    ("James", &["Jim", "Jamie"]),
    ("Michael", &["Mike", "Mick"]),
    ("Thomas", &["Tom", "Tommy"]),
    ("Katherine", &["Kate", "Katie"]),
    ("Jennifer", &["Jenny", "Jen"]),
    ("Daniel", &["Dan", "Danny"]),
    ("Christopher", &["Chris"]),
    ("Matthew", &["Matt"]),
    ("Alexander", &["Alex"]),
    ("Samuel", &["Sam"]),
    ("Joseph", &["Joe"]),
    ("Rebecca", &["Becky", "Becca"]),
    ("Victoria", &["Vicky", "Tori"]),
    ("Jonathan", &["Jon", "Jonny"]),
    ("Benjamin", &["Ben"]),
    ("Andrew", &["Andy", "Drew"]),
    ("Richard", &["Rich", "Dick"]),
    ("Stephen", &["Steve", "Steven"]),
    ("Samantha", &["Sam", "Sammy"]),
    ("Patricia", &["Pat", "Trish"]),
    ("Deborah", &["Debbie", "Deb"]),
    ("Muhammad", &["Mohammed", "Mohammad"]),
    ("Charlotte", &["Lottie", "Charlie"]),
    ("Jessica", &["Jess"]),
    ("Nicola", &["Nicky"]),
    ("Susan", &["Sue", "Susie"]),
];

const DISTRICTS: &[&str] = &[
    "KT1", "KT2", "KT3", "KT4", "KT5", "KT6", "KT9", "SW19", "SW20", "TW10", "CR4", "SM4",
];

/// A true person.
#[derive(Clone)]
pub(super) struct Truth {
    pub(super) forename: String,
    pub(super) surname: String,
    pub(super) dob: (i32, u8, u8),
    pub(super) female: bool,
    pub(super) postcode: String,
}

/// How one agency recorded a person.
#[derive(Clone)]
pub(super) struct Recorded {
    forename: String,
    surname: String,
    dob: String,
    sex: &'static str,
    postcode: String,
}

impl Recorded {
    pub(super) fn raw(&self) -> RawPerson<'_> {
        RawPerson {
            forenames: Some(&self.forename),
            surname: Some(&self.surname),
            dob: Some(&self.dob),
            sex: Some(self.sex),
            postcode: Some(&self.postcode),
        }
    }
}

/// The names of a comma-separated list.
fn list(names: &'static str) -> Vec<&'static str> {
    names.split(',').map(str::trim).collect()
}

/// A Zipf-like pick: rank r with weight 1/(r+1).
fn pick<'a>(list: &[&'a str], rng: &mut StdRng) -> &'a str {
    let total: f64 = (1..=list.len()).map(|r| 1.0 / r as f64).sum();
    let mut u = rng.random::<f64>() * total;
    for (i, s) in list.iter().enumerate() {
        u -= 1.0 / (i + 1) as f64;
        if u <= 0.0 {
            return s;
        }
    }
    list[list.len() - 1]
}

fn postcode(rng: &mut StdRng) -> String {
    let d = DISTRICTS[rng.random_range(0..DISTRICTS.len())];
    let letters = b"ABDEFGHJLNPQRSTUWXYZ";
    let l = |rng: &mut StdRng| letters[rng.random_range(0..letters.len())] as char;
    format!("{d} {}{}{}", rng.random_range(1..10), l(rng), l(rng))
}

pub(super) fn person(rng: &mut StdRng) -> Truth {
    let female = rng.random_bool(0.5);
    let days_in = |m: u8| if m == 2 { 28 } else { 30 };
    let month = rng.random_range(1..=12u8);
    Truth {
        forename: pick(if female { &FEMALE_LIST } else { &MALE_LIST }, rng).to_string(),
        surname: pick(&SURNAME_LIST, rng).to_string(),
        dob: (
            rng.random_range(1940..2010),
            month,
            rng.random_range(1..=days_in(month)),
        ),
        female,
        postcode: postcode(rng),
    }
}

/// One typing error: substitution, insertion, deletion or transposition.
fn typo(s: &str, rng: &mut StdRng) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 2 {
        return format!("{s}e");
    }
    let i = rng.random_range(0..c.len());
    let letter = (b'a' + rng.random_range(0..26u8)) as char;
    match rng.random_range(0..100) {
        0..45 => c[i] = letter,
        45..65 => c.insert(i + 1, letter),
        65..85 => {
            c.remove(i);
        }
        _ => {
            let j = i.min(c.len() - 2);
            c.swap(j, j + 1);
        }
    }
    c.into_iter().collect()
}

pub(super) fn record(t: &Truth, rng: &mut StdRng) -> Recorded {
    let mut forename = t.forename.clone();
    let mut surname = t.surname.clone();
    if rng.random_bool(0.04)
        && let Some((_, nick)) = NICKNAMES.iter().find(|(n, _)| *n == t.forename)
    {
        forename = nick[rng.random_range(0..nick.len())].to_string();
    }
    if t.female && t.dob.0 < 2006 && rng.random_bool(0.02) {
        surname = pick(&SURNAME_LIST, rng).to_string();
    }
    if rng.random_bool(0.01) {
        surname = format!("{surname}-{}", pick(&SURNAME_LIST, rng));
    }
    if rng.random_bool(0.015) {
        forename = typo(&forename, rng);
    }
    if rng.random_bool(0.015) {
        surname = typo(&surname, rng);
    }
    if rng.random_bool(0.005) {
        std::mem::swap(&mut forename, &mut surname);
    }
    let (y, mut m, mut d) = t.dob;
    if d <= 12 && d != m && rng.random_bool(0.005) {
        std::mem::swap(&mut m, &mut d);
    }
    let mut y = y;
    if rng.random_bool(0.005) {
        match rng.random_range(0..3) {
            0 => d = if d < 28 { d + 1 } else { d - 1 },
            1 => d = if d > 1 { d - 1 } else { d + 1 },
            _ => y += if rng.random_bool(0.5) { 1 } else { -10 },
        }
    }
    let postcode = if rng.random_bool(0.12) {
        postcode(rng)
    } else {
        t.postcode.clone()
    };
    Recorded {
        forename,
        surname,
        dob: format!("{d:02}/{m:02}/{y}"),
        sex: if t.female { "F" } else { "M" },
        postcode,
    }
}

/// How several agencies record one population (the linkage measurements of `fuzzy::link`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Agencies {
    /// How many agencies.
    pub(super) count: usize,
    /// Probability that an agency holds a given person.
    pub(super) presence: f64,
    /// Probability that an agency holds a second, duplicate record of a person it holds (own,
    /// independent errors): the agent's default `duplicate_record`.
    pub(super) duplicate: f64,
    /// Probability that a record has a second person role (another person, e.g. a suspect
    /// next to a victim).
    pub(super) second_role: f64,
    /// Whether the agencies record a postcode.
    pub(super) postcode: bool,
    /// Supplementary: draw most names from large synthetic pools instead of the short lists,
    /// for a name diversity like the UK's (two random people share a surname with probability
    /// about 0.002 instead of 0.055, a forename about 0.02 instead of 0.08).
    pub(super) diverse_names: bool,
}

impl Agencies {
    /// Two agencies, each holding three persons in four.
    pub(super) fn two(postcode: bool) -> Self {
        Self {
            count: 2,
            presence: 0.75,
            duplicate: 0.02,
            second_role: 0.1,
            postcode,
            diverse_names: false,
        }
    }

    /// Five agencies, each holding three persons in ten.
    pub(super) fn five(postcode: bool) -> Self {
        Self {
            count: 5,
            presence: 0.3,
            ..Self::two(postcode)
        }
    }

    /// Nodes per person of the population, on average.
    fn nodes_per_person(&self) -> f64 {
        self.count as f64 * self.presence * (1.0 + self.duplicate) * (1.0 + self.second_role)
    }
}

/// Person nodes (one per person role of a record) of several agencies, with the truth.
pub(super) struct Scenario {
    /// The population.
    pub(super) truth: Vec<Truth>,
    /// Per node: how it was recorded.
    pub(super) nodes: Vec<Recorded>,
    /// Per node: the true person (index into `truth`).
    pub(super) person: Vec<u32>,
    /// Per node: its record (the clustering constraint's group).
    pub(super) group: Vec<u64>,
    /// Per node: its agency.
    pub(super) agency: Vec<u8>,
}

/// About `target` nodes of `agencies` recording one population, seeded.
pub(super) fn scenario(seed: u64, target: usize, agencies: Agencies) -> Scenario {
    let mut rng = StdRng::seed_from_u64(seed);
    let persons = ((target as f64 / agencies.nodes_per_person()).ceil() as usize).max(2);
    let truth: Vec<Truth> = (0..persons)
        .map(|_| {
            let mut t = person(&mut rng);
            if agencies.diverse_names {
                if rng.random_bool(0.8) {
                    let k = rng.random_range(2..=3);
                    t.surname = synthetic_name(k, &mut rng);
                }
                if rng.random_bool(0.5) {
                    t.forename = synthetic_name(2, &mut rng);
                }
            }
            t
        })
        .collect();
    let mut s = Scenario {
        truth,
        nodes: Vec::new(),
        person: Vec::new(),
        group: Vec::new(),
        agency: Vec::new(),
    };
    let mut records = 0u64;
    for a in 0..agencies.count {
        for p in 0..persons {
            if !rng.random_bool(agencies.presence) {
                continue;
            }
            let copies = if rng.random_bool(agencies.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let mut roles = vec![p];
                if rng.random_bool(agencies.second_role) {
                    let other = rng.random_range(0..persons - 1);
                    roles.push(if other >= p { other + 1 } else { other });
                }
                for q in roles {
                    let mut r = record(&s.truth[q], &mut rng);
                    if !agencies.postcode {
                        r.postcode.clear();
                    }
                    s.nodes.push(r);
                    s.person.push(q as u32);
                    s.group.push(records);
                    s.agency.push(a as u8);
                }
                records += 1;
            }
        }
    }
    s
}

/// A made-up name of `syllables` syllables from a pool of 30 (900 two-syllable names, 27 000
/// three-syllable ones), capitalised.
fn synthetic_name(syllables: usize, rng: &mut StdRng) -> String {
    const POOL: [&str; 30] = [
        "an", "bel", "cor", "dan", "el", "far", "gor", "hal", "is", "jon", "kel", "lin", "mor",
        "nor", "ol", "pen", "ras", "sil", "tan", "ul", "ver", "wen", "yar", "zel", "brook", "ford",
        "ley", "ton", "wick", "ham",
    ];
    let mut name: String = (0..syllables)
        .map(|_| POOL[rng.random_range(0..POOL.len())])
        .collect();
    if let Some(first) = name.get(..1).map(str::to_ascii_uppercase) {
        name.replace_range(..1, &first);
    }
    name
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

#[test]
#[ignore = "measurement: run with --release -- --ignored --nocapture"]
fn measure_encoding_and_agreement() {
    let n: usize = std::env::var("FUZZY_MEASURE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let mut rng = StdRng::seed_from_u64(7);
    let truth: Vec<Truth> = (0..n).map(|_| person(&mut rng)).collect();
    let a: Vec<Recorded> = truth.iter().map(|t| record(t, &mut rng)).collect();
    let b: Vec<Recorded> = truth.iter().map(|t| record(t, &mut rng)).collect();

    let key = FuzzyKey::from_bytes(&[0x5a; 32]);
    let t0 = Instant::now();
    let enc = FuzzyEncoder::new(&key, ClkConfig::default()).expect("default config");
    let setup = t0.elapsed();

    let t0 = Instant::now();
    let fields_a: Vec<PersonFields> = a
        .iter()
        .map(|r| PersonFields::from_raw(&r.raw()).0)
        .collect();
    let normalise = t0.elapsed();
    let t0 = Instant::now();
    let tok_a: Vec<TokenSet> = fields_a
        .iter()
        .map(|p| enc.token_keys().encode(p))
        .collect();
    let tokens = t0.elapsed();
    let t0 = Instant::now();
    let clk_a: Vec<Clk> = fields_a
        .iter()
        .map(|p| enc.clk_encoder().encode(p))
        .collect();
    let clks = t0.elapsed();
    let t0 = Instant::now();
    let rec_b: Vec<FuzzyRecord> = b.iter().map(|r| enc.encode_raw(&r.raw()).0).collect();
    let full = t0.elapsed();
    let per_s = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    println!("fuzzy encoding, {n} people, one thread:");
    println!("  key derivation (once): {setup:?}");
    println!("  normalise: {:>10.0} people/s", per_s(normalise));
    println!("  tokens:    {:>10.0} people/s", per_s(tokens));
    println!("  CLK:       {:>10.0} people/s", per_s(clks));
    println!(
        "  all (normalise + tokens + CLK): {:>10.0} people/s ({:.1} µs each)",
        per_s(full),
        full.as_secs_f64() * 1e6 / n as f64
    );

    // Per-slot m (true pairs) and u (random pairs) agreement rates.
    let tok_b: Vec<TokenSet> = rec_b.iter().map(|r| r.tokens).collect();
    let clk_b: Vec<Clk> = rec_b.iter().map(|r| r.clk.clone()).collect();
    let mut m = [0usize; Slot::COUNT];
    let mut m_cmp = [0usize; Slot::COUNT];
    let mut u = [0usize; Slot::COUNT];
    let mut u_cmp = [0usize; Slot::COUNT];
    let samples = 200_000usize;
    for i in 0..n {
        let ag = tok_a[i].agreement(&tok_b[i]);
        for s in Slot::ALL {
            m[s.index()] += usize::from(ag.agrees(s) && s.primary() == s);
            m_cmp[s.index()] += usize::from(ag.compared(s) && s.primary() == s);
        }
    }
    for _ in 0..samples {
        let (i, j) = (rng.random_range(0..n), rng.random_range(0..n));
        if i == j {
            continue;
        }
        let ag = tok_a[i].agreement(&tok_b[j]);
        for s in Slot::ALL {
            u[s.index()] += usize::from(ag.agrees(s) && s.primary() == s);
            u_cmp[s.index()] += usize::from(ag.compared(s) && s.primary() == s);
        }
    }
    println!("\nper-slot agreement: m = P(agree | match), u = P(agree | random pair)");
    println!(
        "  {:<26} {:>8} {:>10} {:>8} {:>8}",
        "slot", "m", "u", "w_agree", "w_dis"
    );
    for s in Slot::ALL.into_iter().filter(|s| s.primary() == *s) {
        let i = s.index();
        let mr = m[i] as f64 / m_cmp[i].max(1) as f64;
        let ur = (u[i] as f64 / u_cmp[i].max(1) as f64).max(1e-6);
        println!(
            "  {:<26} {:>8.4} {:>10.6} {:>8.2} {:>8.2}",
            format!("{s:?}"),
            mr,
            ur,
            (mr / ur).log2(),
            ((1.0 - mr).max(1e-6) / (1.0 - ur)).log2()
        );
    }

    // Dice of true pairs and of all non-pairs (a full n × n comparison).
    let t0 = Instant::now();
    let mut best_other = vec![0f64; n];
    let mut over = [0usize; 4];
    let thresholds = [0.7, 0.75, 0.8, 0.85];
    for (i, x) in clk_a.iter().enumerate() {
        for (j, y) in clk_b.iter().enumerate() {
            if i == j {
                continue;
            }
            let d = dice(x, y);
            if d > best_other[i] {
                best_other[i] = d;
            }
            for (k, t) in thresholds.iter().enumerate() {
                over[k] += usize::from(d >= *t);
            }
        }
    }
    let all_pairs = t0.elapsed();
    let mut true_dice: Vec<f64> = (0..n).map(|i| dice(&clk_a[i], &clk_b[i])).collect();
    true_dice.sort_by(f64::total_cmp);
    best_other.sort_by(f64::total_cmp);
    println!(
        "\nDice, {n} × {n} all pairs in {all_pairs:?} ({:.0} M comparisons/s):",
        (n * n) as f64 / all_pairs.as_secs_f64() / 1e6
    );
    println!(
        "  true pairs: min {:.3}, 0.5% {:.3}, 1% {:.3}, 5% {:.3}, median {:.3}",
        true_dice[0],
        quantile(&true_dice, 0.005),
        quantile(&true_dice, 0.01),
        quantile(&true_dice, 0.05),
        quantile(&true_dice, 0.5)
    );
    println!(
        "  best non-pair per record: median {:.3}, 99% {:.3}, max {:.3}",
        quantile(&best_other, 0.5),
        quantile(&best_other, 0.99),
        best_other[n - 1]
    );
    for (k, t) in thresholds.iter().enumerate() {
        let tp = true_dice.iter().filter(|d| **d >= *t).count();
        println!(
            "  Dice >= {t}: true pairs kept {:.4}, non-pairs over it {}",
            tp as f64 / n as f64,
            over[k]
        );
    }

    // Blocking keys: how many true pairs share the key, and how many candidate pairs it makes.
    let schemes: &[(&str, &[Slot])] = &[
        ("DobFull", &[Slot::DobFull]),
        ("DobFull+Sex", &[Slot::DobFull, Slot::Sex]),
        (
            "SurnamePhonetic+DobYearMonth",
            &[Slot::SurnamePhonetic, Slot::DobYearMonth],
        ),
        (
            "ForenamePrefix4+DobYearDay",
            &[Slot::ForenamePrefix4, Slot::DobYearDay],
        ),
        (
            "SurnamePrefix4+DobMonthDay",
            &[Slot::SurnamePrefix4, Slot::DobMonthDay],
        ),
        ("NameUnordered", &[Slot::NameUnordered]),
        (
            "SurnameCompact+ForenameExact",
            &[Slot::SurnameCompact, Slot::ForenameExact],
        ),
        ("PostcodeFull", &[Slot::PostcodeFull]),
        (
            "DobYearDayMonthUnordered+Sex",
            &[Slot::DobYearDayMonthUnordered, Slot::Sex],
        ),
    ];
    println!("\nblocking keys ({n} × {n}):");
    let mut covered = vec![false; n];
    let mut union_pairs = std::collections::HashSet::new();
    // The same without the name-only keys (those with no date or postcode part).
    let mut covered_anchored = vec![false; n];
    let mut anchored_pairs = std::collections::HashSet::new();
    for (name, slots) in schemes {
        let anchored = slots
            .iter()
            .any(|s| matches!(s.field(), FieldId::Dob | FieldId::Postcode));
        let key_of =
            |t: &TokenSet| -> Option<Vec<FuzzyToken>> { slots.iter().map(|s| t.get(*s)).collect() };
        let mut index: HashMap<Vec<FuzzyToken>, Vec<usize>> = HashMap::new();
        for (j, t) in tok_b.iter().enumerate() {
            if let Some(k) = key_of(t) {
                index.entry(k).or_default().push(j);
            }
        }
        let mut pairs = 0usize;
        let mut kept = 0usize;
        for (i, t) in tok_a.iter().enumerate() {
            if let Some(js) = key_of(t).and_then(|k| index.get(&k)) {
                pairs += js.len();
                if js.contains(&i) {
                    kept += 1;
                    covered[i] = true;
                    covered_anchored[i] |= anchored;
                }
                if union_pairs.len() < 5_000_000 {
                    union_pairs.extend(js.iter().map(|j| (i, *j)));
                }
                if anchored && anchored_pairs.len() < 5_000_000 {
                    anchored_pairs.extend(js.iter().map(|j| (i, *j)));
                }
            }
        }
        println!(
            "  {:<34} true pairs kept {:.4}, candidate pairs {}",
            name,
            kept as f64 / n as f64,
            pairs
        );
    }
    println!(
        "  union of all: true pairs kept {:.4}, candidate pairs {}",
        covered.iter().filter(|c| **c).count() as f64 / n as f64,
        union_pairs.len()
    );
    println!(
        "  union without name-only keys: true pairs kept {:.4}, candidate pairs {}",
        covered_anchored.iter().filter(|c| **c).count() as f64 / n as f64,
        anchored_pairs.len()
    );

    // Fellegi–Sunter: exclusive levels per field (the token fields, then the CLK's Dice in
    // bands), m and u per level from the true pairs and random pairs, then one-to-one (mutual
    // best) on the blocked candidates. With truth-trained m/u this is an upper bound for EM.
    let nf = FIELDS.len() + 1;
    let levels_of = |i: usize, j: usize| -> Vec<usize> {
        let ag = tok_a[i].agreement(&tok_b[j]);
        let mut v: Vec<usize> = FIELDS.iter().map(|levels| level(levels, &ag)).collect();
        let d = dice(&clk_a[i], &clk_b[j]);
        v.push(
            DICE_BANDS
                .iter()
                .position(|t| d >= *t)
                .unwrap_or(DICE_BANDS.len()),
        );
        v
    };
    let mut m_lv = vec![[0f64; 8]; nf];
    let mut u_lv = vec![[0f64; 8]; nf];
    for i in 0..n {
        for (f, l) in levels_of(i, i).into_iter().enumerate() {
            m_lv[f][l] += 1.0;
        }
    }
    for _ in 0..samples {
        let (i, j) = (rng.random_range(0..n), rng.random_range(0..n));
        if i != j {
            for (f, l) in levels_of(i, j).into_iter().enumerate() {
                u_lv[f][l] += 1.0;
            }
        }
    }
    let weights: Vec<[f64; 8]> = (0..nf)
        .map(|f| {
            let (mt, ut): (f64, f64) = (m_lv[f].iter().sum(), u_lv[f].iter().sum());
            let mut w = [0f64; 8];
            for l in 0..8 {
                w[l] = ((m_lv[f][l] + 0.5) / (mt + 4.0)).log2()
                    - ((u_lv[f][l] + 0.5) / (ut + 4.0)).log2();
            }
            w
        })
        .collect();
    let score = |i: usize, j: usize, with_clk: bool| -> f64 {
        levels_of(i, j)
            .into_iter()
            .enumerate()
            .filter(|(f, _)| with_clk || *f < FIELDS.len())
            .map(|(f, l)| {
                let missing = f < FIELDS.len() && l == FIELDS[f].len() + 1;
                if missing { 0.0 } else { weights[f][l] }
            })
            .sum()
    };
    // With every person in both files, and with A lacking a quarter (indices 0 mod 4) and B
    // half (odd indices), so only a quarter are in both and most records have no true partner
    // to protect them from a false link.
    for (with_clk, partial) in [(false, false), (false, true), (true, false), (true, true)] {
        let t0 = Instant::now();
        let mut best_a: HashMap<usize, (f64, usize)> = HashMap::new();
        let mut best_b: HashMap<usize, (f64, usize)> = HashMap::new();
        for &(i, j) in union_pairs
            .iter()
            .filter(|p| !partial || (p.0 % 4 != 0 && p.1 % 2 == 0))
        {
            let w = score(i, j, with_clk);
            let ea = best_a.entry(i).or_insert((f64::MIN, usize::MAX));
            if w > ea.0 || (w == ea.0 && j < ea.1) {
                *ea = (w, j);
            }
            let eb = best_b.entry(j).or_insert((f64::MIN, usize::MAX));
            if w > eb.0 || (w == eb.0 && i < eb.1) {
                *eb = (w, i);
            }
        }
        let scoring = t0.elapsed();
        let present = if partial {
            (0..n).filter(|i| i % 4 == 2).count()
        } else {
            n
        };
        println!(
            "\nFellegi–Sunter on {} over the blocked candidates, {present} true pairs \
             (scored in {scoring:?}):",
            if with_clk {
                "tokens + CLK Dice bands"
            } else {
                "tokens"
            }
        );
        for threshold in [0.0, 5.0, 10.0, 12.0, 14.0, 16.0, 20.0] {
            let (mut tp, mut fp) = (0usize, 0usize);
            for (&i, &(w, j)) in &best_a {
                if w >= threshold && best_b.get(&j).is_some_and(|b| b.1 == i) {
                    if i == j { tp += 1 } else { fp += 1 }
                }
            }
            println!(
                "  weight >= {threshold:>4}: precision {:.5}, recall {:.5} ({tp} true, {fp} false)",
                tp as f64 / (tp + fp).max(1) as f64,
                tp as f64 / present as f64
            );
        }
    }
    assert_eq!(tok_a.len(), n);
}

/// The comparison levels of each field, best first; a pair's level is the first that agrees,
/// `len` when compared and none agrees, `len + 1` when not compared.
const FIELDS: &[&[Slot]] = &[
    &[
        Slot::SurnameCompact,
        Slot::SurnamePhonetic,
        Slot::SurnamePrefix4,
        Slot::SurnameEnds,
        Slot::SurnamePartFirst,
        Slot::NameUnordered,
    ],
    &[
        Slot::ForenameExact,
        Slot::ForenamePhonetic,
        Slot::ForenamePrefix4,
        Slot::NameUnordered,
    ],
    &[
        Slot::DobFull,
        Slot::DobYearDayMonthUnordered,
        Slot::DobYearMonth,
        Slot::DobYearDay,
        Slot::DobMonthDay,
    ],
    &[Slot::Sex],
    &[
        Slot::PostcodeFull,
        Slot::PostcodeSector,
        Slot::PostcodeDistrict,
    ],
];

/// The Dice bands of the CLK comparison, best first.
const DICE_BANDS: [f64; 5] = [0.95, 0.9, 0.85, 0.8, 0.7];

fn level(levels: &[Slot], ag: &Agreement) -> usize {
    if let Some(l) = levels.iter().position(|s| ag.agrees(*s)) {
        return l;
    }
    if ag.compared(levels[0]) {
        levels.len()
    } else {
        levels.len() + 1
    }
}
