#!/usr/bin/env python3
"""Plain-text Splink on exactly the person roles our fuzzy linker clustered, scored on clusters.

Purpose: tell a ceiling of the data (what a plain-text probabilistic linker reaches on the same
records) from a cost of our keyed-token encoding. About 3% of the person roles (police ASB
callers) carry no date of birth, only names and sex, so every score is also split by whether
the pair's two nodes both have a date of birth.

Input is a linkage dump written by::

    SKP_BENCH_LINKAGE_DUMP=DIR ./target/release/bench linkage --persons 100000

* ``DIR/<config>.csv`` (``dataset,line,role,person_id,cluster``): one row per person role
  ("node") our linker clustered, with its true person and our cluster id. ``line`` is the
  line of the source export (header = line 1); ``role`` indexes the truth rows of that line.
* ``DIR/exports/<dataset>.csv``: the synthetic source exports (each agency's own columns), and
  ``DIR/exports/truth/<dataset>.csv`` (``line,record_key,role,person_id,record,errors``, one
  row per person role of a line, in role order).

What it does:

1. Builds one plain-text table of every node of ``DIR/demo_fuzzy.csv``: surname and forename
   (lower-cased), date of birth (ISO ``YYYY-MM-DD`` from ``dd/mm/yyyy`` or ``yyyy-mm-dd``;
   invalid or empty is null), sex (``F``/``M`` from F/M/Female/Male/NHS 2/1, else null) and the
   person's postcode (upper-cased; null for datasets that only hold an incident location).
2. Runs Splink (DuckDB) ``dedupe_only`` with the comparisons of ``compare.py``
   (``worker_splink``): NameComparison on forename and surname with term-frequency
   adjustments, DateOfBirthComparison, ExactMatch on sex, PostcodeComparison. Trained as there:
   lambda from forename + surname + dob (recall 0.7), u by random sampling (1e6 pairs, seed 1),
   m by EM on forename + surname and on dob. Blocking rules (``BLOCKING``) include rules
   without the date of birth so undated nodes can be compared at all.
3. Clusters Splink's pairwise predictions by connected components (what
   ``linker.clustering.cluster_pairwise_predictions_at_threshold`` does) at every distinct
   match weight, and reports the fixed thresholds ``THRESHOLDS`` plus the highest recall with
   precision >= ``TARGET_PRECISION`` (overall and on dated pairs), the best F1, and every pair
   kept from ``predict`` (``PREDICT_FLOOR``: the recall ceiling of the blocking rules).
4. Scores our own clusters (``--ours``) with the same code, and Splink's best recall at the
   same overall precision as each of ours.
5. Counts different-person pairs with identical plain-text values (a ceiling for any linker).

Scores are pairwise on clusters: true pairs = sum over true persons of n(n-1)/2, linked pairs =
sum over clusters, correct pairs = sum over (cluster, person) groups. Each score is given three
ways: ``all`` pairs, ``dated`` pairs (both nodes have a date of birth) and ``undated`` pairs (at
least one node lacks one; = all - dated).

Usage::

    target/compare-venv/bin/python bench/compare/splink_nodes.py DUMP_DIR \
        [--ours demo_fuzzy,pnc_demo_fuzzy] [--json]

``demo_fuzzy`` uses the same fields Splink sees (names, dob, sex, postcode): the fair
comparison. ``pnc_demo_fuzzy`` also uses police national computer ids. Prints a Markdown table
(and, with ``--json``, one JSON line last). Never prints a record's values.

Python 3.11+, Splink 5 (4.x also works), DuckDB and pandas.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import inspect
import json
import logging
import math
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

# (dataset, truth role) -> source columns (surname, forename, dob, sex, person postcode or None).
COLS: dict[tuple[str, str], tuple[str, str, str, str, str | None]] = {
    ("council_asb_case", "victim"): (
        "Victim Surname", "Victim First Name", "Victim DOB", "Victim Gender", None,
    ),
    ("council_asb_case", "perpetrator"): (
        "Perpetrator Surname", "Perpetrator First Name", "Perpetrator DOB",
        "Perpetrator Gender", None,
    ),
    ("council_csc_flags", "child"): ("Surname", "Forename", "DOB", "Gender", "Postcode"),
    ("council_hclic", "person"): ("Surname", "First Name", "Date Of Birth", "Gender", None),
    ("icb_ed_assault_mh_linked", "patient"): (
        "PERSON_FAMILY_NAME", "PERSON_GIVEN_NAME", "PERSON_BIRTH_DATE",
        "PERSON_STATED_GENDER_CODE", "POSTCODE_USUAL_ADDRESS",
    ),
    ("police_asb_incident", "caller"): (
        "CALLER_SURNAME", "CALLER_FORENAME", "CALLER_DOB", "CALLER_SEX", None,
    ),
    ("police_crime", "victim"): ("VIC_SURNAME", "VIC_FORENAME", "VIC_DOB", "VIC_SEX", None),
    ("police_crime", "suspect"): ("SUS_SURNAME", "SUS_FORENAME", "SUS_DOB", "SUS_SEX", None),
    ("probation_caseload", "person"): (
        "surname", "firstName", "dateOfBirth", "gender", "postcode",
    ),
    ("probation_reoffending_events", "person"): (
        "Surname", "Forename", "DateOfBirth", "Sex", None,
    ),
}
SEX = {"f": "F", "female": "F", "2": "F", "m": "M", "male": "M", "1": "M"}
REFERENCE_CONFIG = "demo_fuzzy"  # the node set Splink sees
DEFAULT_OURS = "demo_fuzzy,pnc_demo_fuzzy"
THRESHOLDS = [0.5, 0.9, 0.99, 0.999, 0.9999]
TARGET_PRECISION = 0.999
# Pairs below this match probability are not kept from predict(): no threshold of interest
# is lower, and connected components above it never need them.
PREDICT_FLOOR = 0.01
SPLITS = ("all", "dated", "undated")
# Blocking rules for predictions, as (description, columns for block_on). Every pair passing
# any rule is scored; Splink removes duplicates across rules.
BLOCKING: list[tuple[str, tuple[str, ...]]] = [
    ("surname + forename (no dob: lets undated nodes in)", ("surname", "forename")),
    ("dob", ("dob",)),
    ("surname + year of birth (day/month typos)", ("surname", "substr(dob, 1, 4)")),
    ("forename + month of birth (surname change, day/year typo)",
     ("forename", "substr(dob, 6, 2)")),
    ("surname + forename initial + sex (forename typo, undated)",
     ("surname", "substr(forename, 1, 1)", "sex")),
    ("forename + surname initial + sex (surname typo, undated)",
     ("forename", "substr(surname, 1, 1)", "sex")),
    ("postcode + surname initial", ("postcode", "substr(surname, 1, 1)")),
]


class DumpError(Exception):
    """A missing or inconsistent dump: the message names the file and what to do."""


# --------------------------------------------------------------------------------------------
# Reading the dump
# --------------------------------------------------------------------------------------------


def parse_dob(text: str) -> str | None:
    """ISO date from ``dd/mm/yyyy`` or ``yyyy-mm-dd``; None when empty or not a real date."""
    text = text.strip()
    try:
        if "/" in text:
            d, m, y = text.split("/")
        elif "-" in text:
            y, m, d = text.split("-")
        else:
            return None
        if len(y) != 4:
            return None
        return dt.date(int(y), int(m), int(d)).isoformat()
    except ValueError:
        return None


def parse_sex(text: str) -> str | None:
    return SEX.get(text.strip().lower())


def read_csv(path: Path, what: str) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise DumpError(
            f"{path}: not found ({what}); write a dump with "
            "`SKP_BENCH_LINKAGE_DUMP=DIR ./target/release/bench linkage --persons N`"
        ) from None


def node_key(row: dict[str, str]) -> tuple[str, int, int]:
    return row["dataset"], int(row["line"]), int(row["role"])


def load_nodes(dump: Path) -> list[dict]:
    """Every node of the reference config, in file order, with its plain-text values."""
    if not dump.is_dir():
        raise DumpError(
            f"{dump}: not a directory; give the DIR written by "
            "`SKP_BENCH_LINKAGE_DUMP=DIR ./target/release/bench linkage --persons N`"
        )
    nodes = read_csv(dump / f"{REFERENCE_CONFIG}.csv", "the reference node list")
    if not nodes:
        raise DumpError(f"{dump / REFERENCE_CONFIG}.csv: no nodes")
    exports: dict[str, list[dict[str, str]]] = {}
    truth: dict[tuple[str, int], list[dict[str, str]]] = defaultdict(list)
    for ds in sorted({n["dataset"] for n in nodes}):
        exports[ds] = read_csv(dump / "exports" / f"{ds}.csv", f"source export {ds}")
        for t in read_csv(dump / "exports" / "truth" / f"{ds}.csv", f"truth of {ds}"):
            truth[(ds, int(t["line"]))].append(t)
    out = []
    for i, n in enumerate(nodes):
        ds, line, role = node_key(n)
        where = f"{dump / REFERENCE_CONFIG}.csv:{i + 2}"
        try:
            t = truth[(ds, line)][role]
            row = exports[ds][line - 2]
        except IndexError:
            raise DumpError(f"{where}: no source line {line} role {role} in {ds}") from None
        if t["person_id"] != n["person_id"]:
            raise DumpError(f"{where}: person {n['person_id']} but the truth says {t['person_id']}")
        cols = COLS.get((ds, t["role"]))
        if cols is None:
            raise DumpError(f"{where}: no column map for {ds} role {t['role']}; extend COLS")
        sur, fore, dob, sex, pc = ((row.get(c) or "").strip() if c else "" for c in cols)
        out.append({
            "unique_id": i,
            "key": (ds, line, role),
            "dataset": ds,
            "person_id": n["person_id"],
            "surname": sur.lower() or None,
            "forename": fore.lower() or None,
            "dob": parse_dob(dob),
            "sex": parse_sex(sex),
            "postcode": pc.upper() or None,
        })
    return out


def load_clusters(dump: Path, config: str, nodes: list[dict]) -> list[str]:
    """Our cluster id of each node (aligned with ``nodes``) from ``DIR/<config>.csv``."""
    rows = read_csv(dump / f"{config}.csv", f"our clusters for --ours {config}")
    by_key = {node_key(r): r for r in rows}
    if len(by_key) != len(nodes) or any(n["key"] not in by_key for n in nodes):
        raise DumpError(f"{dump / config}.csv: its nodes differ from {REFERENCE_CONFIG}.csv")
    out = []
    for n in nodes:
        r = by_key[n["key"]]
        if r["person_id"] != n["person_id"]:
            raise DumpError(f"{dump / config}.csv: node {n['key']} has another person")
        out.append(r["cluster"])
    return out


# --------------------------------------------------------------------------------------------
# Scoring (the same code for Splink and ours)
# --------------------------------------------------------------------------------------------


def c2(n: int) -> int:
    return n * (n - 1) // 2


@dataclass(frozen=True)
class Score:
    true: int
    linked: int
    correct: int

    @property
    def precision(self) -> float:
        return self.correct / self.linked if self.linked else math.nan

    @property
    def recall(self) -> float:
        return self.correct / self.true if self.true else math.nan

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r > 0 else math.nan

    def as_dict(self) -> dict:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 6)

        return {
            "true_pairs": self.true, "linked_pairs": self.linked, "correct_pairs": self.correct,
            "precision": num(self.precision), "recall": num(self.recall), "f1": num(self.f1),
        }


def splits(true: tuple[int, int], linked: tuple[int, int], correct: tuple[int, int]) -> dict:
    """Three-way scores from (all, dated) pair counts; undated = all - dated."""
    return {
        "all": Score(true[0], linked[0], correct[0]),
        "dated": Score(true[1], linked[1], correct[1]),
        "undated": Score(true[0] - true[1], linked[0] - linked[1], correct[0] - correct[1]),
    }


def pair_counts(groups: list) -> tuple[int, int]:
    """(all, dated) pairs within groups, from one (group key, node is dated) item per node."""
    n: Counter = Counter()
    d: Counter = Counter()
    for key, dated in groups:
        n[key] += 1
        d[key] += dated
    return sum(c2(v) for v in n.values()), sum(c2(v) for v in d.values())


def score_labels(labels: list, persons: list[str], dated: list[bool]) -> dict[str, Score]:
    """Pairwise cluster scores of one clustering (a label per node)."""
    true = pair_counts(list(zip(persons, dated)))
    linked = pair_counts(list(zip(labels, dated)))
    correct = pair_counts(list(zip(zip(labels, persons), dated)))
    return splits(true, linked, correct)


def components(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """Connected-component label of each node (union-find)."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
    return [find(i) for i in range(n)]


def threshold_curve(
    edges: list[tuple[float, int, int]], persons: list[str], dated: list[bool]
) -> list[tuple[float, dict[str, Score]]]:
    """Scores of connected components at every distinct edge weight, highest weight first.

    Adds edges in descending weight and keeps the (all, dated) linked and correct pair counts
    up to date: merging clusters of n1 and n2 nodes adds n1 * n2 linked pairs, and for each
    person with n1 and n2 nodes on the two sides n1 * n2 correct pairs.
    """
    true = pair_counts(list(zip(persons, dated)))
    n = len(persons)
    parent = list(range(n))
    size = [[1, int(dated[i])] for i in range(n)]  # per root: nodes, dated nodes
    members = [{persons[i]: [1, int(dated[i])]} for i in range(n)]  # per root: person -> same

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    linked = [0, 0]
    correct = [0, 0]
    curve = []
    edges = sorted(edges, key=lambda e: -e[0])
    for i, (w, a, b) in enumerate(edges):
        ra, rb = find(a), find(b)
        if ra != rb:
            if len(members[ra]) < len(members[rb]):
                ra, rb = rb, ra
            linked[0] += size[ra][0] * size[rb][0]
            linked[1] += size[ra][1] * size[rb][1]
            big = members[ra]
            for p, (n2, d2) in members[rb].items():
                if p in big:
                    n1, d1 = big[p]
                    correct[0] += n1 * n2
                    correct[1] += d1 * d2
                    big[p] = [n1 + n2, d1 + d2]
                else:
                    big[p] = [n2, d2]
            members[rb] = {}
            size[ra] = [size[ra][0] + size[rb][0], size[ra][1] + size[rb][1]]
            parent[rb] = ra
        if i + 1 == len(edges) or edges[i + 1][0] != w:
            curve.append((w, splits(true, tuple(linked), tuple(correct))))
    return curve


def weight(probability: float) -> float:
    return math.log2(probability / (1 - probability))


def probability(w: float) -> float:
    return 1 / (1 + 2 ** -w)


def at_weight(curve: list, w: float, persons: list[str], dated: list[bool]) -> dict[str, Score]:
    """The curve's scores with every edge of weight >= w (no edges: nothing linked)."""
    best = None
    for cw, s in curve:
        if cw >= w:
            best = s
    if best is None:
        labels = list(range(len(persons)))
        return score_labels(labels, persons, dated)
    return best


def best_recall(curve: list, split: str, target: float) -> tuple[float, dict] | None:
    """(weight, scores) with the highest ``split`` recall at ``split`` precision >= target."""
    ok = [(w, s) for w, s in curve if s[split].linked and s[split].precision >= target]
    return max(ok, key=lambda ws: (ws[1][split].recall, ws[0])) if ok else None


def indistinguishable(nodes: list[dict]) -> dict[str, int]:
    """Different-person pairs that carry identical values, so no plain-text linker can split
    them: both dated with the same surname, forename, dob and sex; or at least one undated
    with the same surname, forename and sex."""
    dated: Counter = Counter()  # (names, dob[, person]) -> dated nodes
    names: Counter = Counter()  # (names[, person]) -> nodes
    undated: Counter = Counter()  # (names[, person]) -> undated nodes
    for x in nodes:
        if None in (x["surname"], x["forename"], x["sex"]):
            continue
        key = (x["surname"], x["forename"], x["sex"])
        for k in (key, (key, x["person_id"])):
            names[k] += 1
            if x["dob"] is None:
                undated[k] += 1
            else:
                dated[(k, x["dob"])] += 1

    def is_person(k: tuple) -> bool:
        return len(k) == 2

    def dated_pairs(person: bool) -> int:
        return sum(c2(c) for (k, _), c in dated.items() if is_person(k) == person)

    def undated_pairs(person: bool) -> int:  # pairs with at least one undated node
        return sum(c2(names[k]) - c2(names[k] - c) for k, c in undated.items()
                   if is_person(k) == person)

    return {
        "dated (same surname, forename, dob, sex)": dated_pairs(False) - dated_pairs(True),
        "undated (same surname, forename, sex)": undated_pairs(False) - undated_pairs(True),
    }


# --------------------------------------------------------------------------------------------
# Splink
# --------------------------------------------------------------------------------------------


def train_splink(nodes: list[dict], max_pairs: float):
    """A trained Splink dedupe_only linker over the nodes and (prepare, train) seconds."""
    import pandas as pd
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    from compare import splink_comparisons

    cols = ["unique_id", "surname", "forename", "dob", "sex", "postcode"]
    df = pd.DataFrame([{c: x[c] for c in cols} for x in nodes], columns=cols)
    df = df.replace({"": None})
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=splink_comparisons(),
        blocking_rules_to_generate_predictions=[block_on(*c) for _, c in BLOCKING],
        retain_intermediate_calculation_columns=False,
    )
    t0 = time.perf_counter()
    db_api = DuckDBAPI()
    if "db_api" in inspect.signature(Linker.__init__).parameters:  # Splink 4.x
        linker = Linker(df, settings, db_api=db_api, set_up_basic_logging=False)
    else:  # Splink 5.x: tables are registered with the database API first
        linker = Linker(
            db_api.register(df, dataset_display_name="nodes"), settings,
            log_level=logging.WARNING,
        )
    logging.getLogger("splink").setLevel(logging.WARNING)
    t1 = time.perf_counter()
    linker.training.estimate_probability_two_random_records_match(
        [block_on("forename", "surname", "dob")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=max_pairs, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("forename", "surname")
    )
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    t2 = time.perf_counter()
    return linker, t1 - t0, t2 - t1


def run_splink(nodes: list[dict], max_pairs: float) -> tuple[list[tuple[float, int, int]], dict]:
    """Splink dedupe_only over the nodes: (weight, id_l, id_r) pairs >= PREDICT_FLOOR, info."""
    import splink

    linker, prepare_s, train_s = train_splink(nodes, max_pairs)
    t2 = time.perf_counter()
    pdf = linker.inference.predict(
        threshold_match_probability=PREDICT_FLOOR
    ).as_pandas_dataframe()
    t3 = time.perf_counter()
    edges = list(zip(
        pdf["match_weight"].astype(float),
        pdf["unique_id_l"].astype(int),
        pdf["unique_id_r"].astype(int),
    ))
    info = {
        "splink_version": splink.__version__,
        "link_type": "dedupe_only",
        "blocking": [d for d, _ in BLOCKING],
        "comparisons": [
            "NameComparison(forename, tf)", "NameComparison(surname, tf)",
            "DateOfBirthComparison(dob)", "ExactMatch(sex)", "PostcodeComparison(postcode)",
        ],
        "training": "lambda from forename+surname+dob (recall 0.7); u random sampling "
        f"{max_pairs:.0e} pairs seed 1; m by EM on forename+surname and on dob",
        "predict_floor": PREDICT_FLOOR,
        "pairs_at_floor": len(edges),
        "lambda": linker._settings_obj._probability_two_random_records_match,
        "timing": {
            "prepare_s": round(prepare_s, 3), "train_s": round(train_s, 3),
            "predict_s": round(t3 - t2, 3), "total_s": round(prepare_s + train_s + t3 - t2, 3),
        },
    }
    return edges, info


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def fmt(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.4f}"


def table(rows: list[tuple[str, dict[str, Score], str]]) -> str:
    head = ["tool / threshold"]
    for s in SPLITS:
        head += [f"P {s}", f"R {s}", f"F1 {s}"]
    head.append("Splink time")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, sc, when in rows:
        cells = [name]
        for s in SPLITS:
            cells += [fmt(sc[s].precision), fmt(sc[s].recall), fmt(sc[s].f1)]
        cells.append(when)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("dump", type=Path, help="dump dir written with SKP_BENCH_LINKAGE_DUMP=DIR")
    ap.add_argument("--ours", default=DEFAULT_OURS,
                    help=f"comma-separated configs of ours to score (default {DEFAULT_OURS})")
    ap.add_argument("--json", action="store_true", help="also print one JSON line last")
    ap.add_argument("--max-pairs", type=float, default=1e6,
                    help="pairs sampled to estimate Splink's u values (default 1e6, as compare.py)")
    args = ap.parse_args(argv)
    ours = [c.strip() for c in args.ours.split(",") if c.strip()]

    try:
        nodes = load_nodes(args.dump)
        our_labels = {c: load_clusters(args.dump, c, nodes) for c in ours}
    except DumpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    persons = [x["person_id"] for x in nodes]
    dated = [x["dob"] is not None for x in nodes]
    undated_by_ds = Counter(x["dataset"] for x in nodes if x["dob"] is None)

    try:
        edges, info = run_splink(nodes, args.max_pairs)
    except ImportError as e:
        print(f"error: cannot import Splink ({e}); use target/compare-venv/bin/python "
              "(pip install -r bench/compare/requirements.txt)", file=sys.stderr)
        return 3
    secs = f"{info['timing']['total_s']:.1f} s"
    curve = threshold_curve(edges, persons, dated)

    rows: list[tuple[str, dict[str, Score], str]] = []
    result: dict = {"nodes": len(nodes), "undated_nodes": sum(not d for d in dated),
                    "undated_by_dataset": dict(undated_by_ds), "splink": info,
                    "thresholds": [], "best": {}, "ours": {}}
    for th in THRESHOLDS:
        w = weight(th)
        sc = at_weight(curve, w, persons, dated)
        # The incremental curve must agree with plain connected components + score_labels.
        labels = components(len(nodes), [(a, b) for ew, a, b in edges if ew >= w])
        check = score_labels(labels, persons, dated)
        assert check == sc, (th, check, sc)
        rows.append((f"Splink p ≥ {th}", sc, secs))
        result["thresholds"].append({"threshold": th, **{s: sc[s].as_dict() for s in SPLITS}})
    for split in ("all", "dated"):
        best = best_recall(curve, split, TARGET_PRECISION)
        if best is None:
            result["best"][split] = None
            continue
        w, sc = best
        p = probability(w)
        rows.append((f"Splink best R at P≥{TARGET_PRECISION} ({split}): p ≥ {p:.6g}", sc, secs))
        result["best"][split] = {"threshold": p, "match_weight": round(w, 4),
                                 **{s: sc[s].as_dict() for s in SPLITS}}
    if curve:
        w, sc = max(curve, key=lambda ws: (ws[1]["all"].f1 if ws[1]["all"].linked else 0, ws[0]))
        rows.append((f"Splink best F1 (all): p ≥ {probability(w):.6g}", sc, secs))
        result["best"]["f1"] = {"threshold": probability(w), "match_weight": round(w, 4),
                                **{s: sc[s].as_dict() for s in SPLITS}}
    floor = curve[-1][1] if curve else at_weight(curve, math.inf, persons, dated)
    rows.append((f"Splink p ≥ {PREDICT_FLOOR} (recall ceiling of blocking)", floor, secs))
    for conf, labels in our_labels.items():
        sc = score_labels(labels, persons, dated)
        rows.append((f"ours {conf}", sc, ""))
        result["ours"][conf] = {s: sc[s].as_dict() for s in SPLITS}
        # Splink at the same overall precision as ours: recall at equal precision.
        target = sc["all"].precision
        best = None if math.isnan(target) else best_recall(curve, "all", target)
        if best is not None:
            w, bsc = best
            rows.append((f"Splink best R at P≥{target:.5f} (= ours {conf}): "
                         f"p ≥ {probability(w):.6g}", bsc, secs))
            result["ours"][conf]["splink_at_same_precision"] = {
                "threshold": probability(w), "match_weight": round(w, 4),
                **{s: bsc[s].as_dict() for s in SPLITS}}
    result["indistinguishable_pairs"] = indistinguishable(nodes)

    true = rows[0][1]
    print(f"# Splink vs ours on {len(nodes)} nodes of {args.dump}")
    print()
    print(f"Nodes without a date of birth: {result['undated_nodes']} "
          f"({', '.join(f'{k} {v}' for k, v in undated_by_ds.most_common())}). "
          f"True pairs: {true['all'].true} ({true['dated'].true} dated, "
          f"{true['undated'].true} undated).")
    print(f"Splink {info['splink_version']} dedupe_only; {info['pairs_at_floor']} pairs at "
          f"p ≥ {PREDICT_FLOOR}; time prepare {info['timing']['prepare_s']:.1f} s, train "
          f"{info['timing']['train_s']:.1f} s, predict {info['timing']['predict_s']:.1f} s.")
    print("Blocking: " + "; ".join(info["blocking"]) + ".")
    print("Different-person pairs with identical values: " + "; ".join(
        f"{k}: {v}" for k, v in result["indistinguishable_pairs"].items()) + ".")
    print()
    print(table(rows))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
