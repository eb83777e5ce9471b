#!/usr/bin/env python3
"""Compare fuzzy person linkers on the same two-agency files, scored against the hidden truth.

Reads ``a.csv`` and ``b.csv`` written by ``bench pair`` (columns
``rec_id,forename,surname,dob,sex,postcode,true_id``) and runs, each in its own process so
that its peak RSS is its own:

* **Splink** (plain text, DuckDB backend): ``link_only``, blocking rules on date of birth,
  surname + year of birth, forename + month of birth and postcode + surname initial;
  comparisons on forename and surname (Jaro-Winkler levels, term-frequency adjusted), date of
  birth, sex and postcode; lambda from a deterministic rule, u by random sampling, m by
  expectation maximisation; pairs at ``match_probability >= --splink-threshold``.
* **clkhash + anonlink** (Bloom-filter CLKs): one 1024-bit CLK per record from a fixed secret
  (bigrams of forename, surname and postcode, positional unigrams of the date of birth, sex),
  candidate pairs at Dice >= ``--anonlink-threshold``, then ``greedy_solve`` (one-to-one).
* **ours** (optional): a CSV of predicted pairs ``a_rec_id,b_rec_id`` given with ``--ours``
  and its time with ``--ours-seconds``, scored by exactly the same code.

Each tool runs ``--runs`` times (fresh process each); times are the median, split into
prepare/encode, train and match. Scoring is pairwise: a predicted pair is ``(a.rec_id,
b.rec_id)``; true pairs are the (a, b) pairs that share ``true_id``. Prints a Markdown table
and one JSON line. Never prints a row's values: records are referred to by count only.

A tool whose packages cannot be imported is skipped with a message (exit 0); any other failure
exits non-zero. ``compare.py --selftest`` checks the scoring path on a tiny built-in case.

Python 3.11; the parent uses the standard library only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HEADER = ["rec_id", "forename", "surname", "dob", "sex", "postcode", "true_id"]
OURS_HEADER = ["a_rec_id", "b_rec_id"]
# Worker exit code: the tool's packages are missing or fail to import (skip, not an error).
EXIT_UNAVAILABLE = 3
# The fixed CLK secret of this benchmark (synthetic data only; not a partnership key).
CLK_SECRET = "skp-bench-compare-fixed-secret-not-for-real-data"
SPLINK_SWEEP = [0.1, 0.5, 0.9, 0.99]
ANONLINK_SWEEP = [0.7, 0.75, 0.8, 0.85, 0.9]
PACKAGES = {
    "splink": ["splink", "duckdb", "pandas", "numpy", "pyarrow", "sqlglot"],
    "anonlink": ["clkhash", "anonlink", "bitarray", "numpy", "cryptography"],
}


class InputError(Exception):
    """Bad input file: the message names the file, the line and what to do."""


# --------------------------------------------------------------------------------------------
# Reading and scoring (standard library only: the same code scores every tool).
# --------------------------------------------------------------------------------------------


@dataclass
class Files:
    """The two input files: record ids and the truth, never the identifying values."""

    a_ids: list[str]
    b_ids: list[str]
    a_truth: dict[str, str]
    b_truth: dict[str, str]

    def true_pairs(self) -> set[tuple[str, str]]:
        """The (a, b) pairs that share a true_id."""
        by_id: dict[str, list[str]] = {}
        for rec, tid in self.b_truth.items():
            by_id.setdefault(tid, []).append(rec)
        return {(a, b) for a, tid in self.a_truth.items() for b in by_id.get(tid, [])}


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a pair file as dicts, checking the header and unique rec_ids."""
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror}); run `bench pair --out DIR` first")
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != HEADER:
            raise InputError(
                f"{path}:1: header is {header!r}; expected {','.join(HEADER)} "
                "(the files `bench pair` writes)"
            )
        rows: list[dict[str, str]] = []
        seen: set[str] = set()
        for line, rec in enumerate(reader, start=2):
            if len(rec) != len(HEADER):
                raise InputError(f"{path}:{line}: {len(rec)} columns; expected {len(HEADER)}")
            row = dict(zip(HEADER, rec))
            if not row["rec_id"] or row["rec_id"] in seen:
                raise InputError(f"{path}:{line}: rec_id is empty or repeated")
            seen.add(row["rec_id"])
            rows.append(row)
    return rows


def read_files(a: Path, b: Path) -> Files:
    """The record ids and truth of both files."""
    ra, rb = read_rows(a), read_rows(b)
    overlap = {r["rec_id"] for r in ra} & {r["rec_id"] for r in rb}
    if overlap:
        raise InputError(f"{a} and {b} share {len(overlap)} rec_id values; they must differ")
    return Files(
        a_ids=[r["rec_id"] for r in ra],
        b_ids=[r["rec_id"] for r in rb],
        a_truth={r["rec_id"]: r["true_id"] for r in ra},
        b_truth={r["rec_id"]: r["true_id"] for r in rb},
    )


def read_pairs(path: Path, files: Files) -> set[tuple[str, str]]:
    """Predicted pairs from a CSV with header ``a_rec_id,b_rec_id`` (the ``--ours`` format)."""
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot open the pairs file ({e.strerror})")
    pairs: set[tuple[str, str]] = set()
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != OURS_HEADER:
            raise InputError(
                f"{path}:1: header is {header!r}; expected {','.join(OURS_HEADER)} "
                "(one predicted pair per line: a.csv rec_id, b.csv rec_id)"
            )
        for line, rec in enumerate(reader, start=2):
            if not rec:
                continue
            if len(rec) != 2:
                raise InputError(f"{path}:{line}: {len(rec)} columns; expected 2")
            a, b = rec[0].strip(), rec[1].strip()
            if a not in files.a_truth:
                hint = " (it is a b.csv id: columns swapped?)" if a in files.b_truth else ""
                raise InputError(f"{path}:{line}: a_rec_id is not a rec_id of a.csv{hint}")
            if b not in files.b_truth:
                raise InputError(f"{path}:{line}: b_rec_id is not a rec_id of b.csv")
            pairs.add((a, b))
    return pairs


def write_pairs(path: Path, pairs) -> None:
    """Writes predicted pairs in the ``--ours`` format."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(OURS_HEADER)
        w.writerows(sorted(pairs))


def score(predicted: set[tuple[str, str]], truth: set[tuple[str, str]]) -> dict:
    """Pairwise precision, recall and F1."""
    tp = len(predicted & truth)
    fp = len(predicted) - tp
    fn = len(truth) - tp
    precision = tp / len(predicted) if predicted else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "pairs": len(predicted),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
    }


# --------------------------------------------------------------------------------------------
# The parent: runs each tool's worker, scores, prints.
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One tool's figures (or why it was skipped)."""

    tool: str
    versions: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    stable: bool = True
    sweep: list[dict] = field(default_factory=list)
    skipped: str | None = None

    def median(self, key: str) -> float | None:
        vals = [r[key] for r in self.runs if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def json(self) -> dict:
        if self.skipped:
            return {"tool": self.tool, "skipped": self.skipped}
        return {
            "tool": self.tool,
            "versions": self.versions,
            "settings": self.settings,
            "runs": len(self.runs),
            "prepare_s": rnd(self.median("prepare_s")),
            "train_s": rnd(self.median("train_s")),
            "match_s": rnd(self.median("match_s")),
            "total_s": rnd(self.median("total_s")),
            "peak_rss_mib": rnd(self.median("peak_rss_mib"), 1),
            "runs_total_s": [rnd(r["total_s"]) for r in self.runs],
            "metrics_same_every_run": self.stable,
            **self.metrics,
            "sweep": self.sweep,
        }


def rnd(x, digits: int = 3):
    return None if x is None else round(x, digits)


def run_tool(tool: str, args, files: Files, truth: set, work: Path) -> Result:
    """Runs one tool's worker ``args.runs`` times and scores its pairs."""
    result = Result(tool=tool)
    pair_sets = []
    for run in range(args.runs):
        out_dir = work / f"{tool}-{run}"
        out_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            tool,
            "--a",
            str(args.a),
            "--b",
            str(args.b),
            "--worker-out",
            str(out_dir),
            "--splink-threshold",
            str(args.splink_threshold),
            "--anonlink-threshold",
            str(args.anonlink_threshold),
        ]
        if run == 0 and not args.no_sweep:
            cmd.append("--sweep")
        print(f"  {tool}: run {run + 1}/{args.runs} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode == EXIT_UNAVAILABLE:
            reason = (proc.stdout.strip().splitlines() or ["import failed"])[-1]
            result.skipped = reason
            return result
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"{tool} worker failed (exit {proc.returncode}):\n{tail}")
        report_path = out_dir / "report.json"
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RuntimeError(f"{tool} worker left no readable {report_path}: {e}") from e
        result.versions = report["versions"]
        result.settings = report["settings"]
        result.runs.append(report["timing"])
        pairs = read_pairs(out_dir / "pairs.csv", files)
        pair_sets.append(pairs)
        if run == 0:
            result.metrics = score(pairs, truth)
            for point in report.get("sweep", []):
                swept = read_pairs(out_dir / point["file"], files)
                result.sweep.append({"threshold": point["threshold"], **score(swept, truth)})
    result.stable = all(p == pair_sets[0] for p in pair_sets)
    return result


def ours_result(args, files: Files, truth: set) -> Result:
    """Scores an externally produced pairs file (our Rust matcher) by the same code."""
    pairs = read_pairs(args.ours, files)
    r = Result(tool="ours")
    r.settings = {"pairs_file": str(args.ours), "label": args.ours_label}
    secs = args.ours_seconds
    enc = args.ours_encode_seconds
    r.runs = [
        {
            "prepare_s": enc,
            "train_s": None,
            "match_s": secs,
            "total_s": None if secs is None else secs + (enc or 0.0),
            "peak_rss_mib": args.ours_rss_mib,
        }
    ]
    r.metrics = score(pairs, truth)
    return r


def fmt(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def print_table(results: list[Result], true_pairs: int, n_a: int, n_b: int, runs: int) -> None:
    print()
    print(
        f"### Fuzzy linkage, {n_a:,} × {n_b:,} records, {true_pairs:,} true pairs "
        f"(median of {runs} run{'s' if runs != 1 else ''}; CPUs: {os.cpu_count()})"
    )
    print()
    print(
        "| tool | version | prepare/encode s | train s | match s | total s | pairs | TP | FP "
        "| FN | precision | recall | F1 | peak RSS MiB |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        if r.skipped:
            print(f"| {r.tool} | skipped: {r.skipped} |" + " |" * 12)
            continue
        j = r.json()
        shown = ("splink", "duckdb", "clkhash", "anonlink")
        ver = ", ".join(f"{k} {v}" for k, v in r.versions.items() if k in shown)
        print(
            f"| {label(r)} | {ver or '–'} | {fmt(j['prepare_s'])} | {fmt(j['train_s'])} "
            f"| {fmt(j['match_s'])} | {fmt(j['total_s'])} | {j['pairs']:,} | {j['tp']:,} "
            f"| {j['fp']:,} | {j['fn']:,} | {j['precision']:.4f} | {j['recall']:.4f} "
            f"| {j['f1']:.4f} | {fmt(j['peak_rss_mib'], 0)} |"
        )
    sweeps = [r for r in results if r.sweep]
    if sweeps:
        print()
        print("Threshold sweep (first run, untimed):")
        print()
        print("| tool | threshold | pairs | precision | recall | F1 |")
        print("|---|--:|--:|--:|--:|--:|")
        for r in sweeps:
            for p in r.sweep:
                print(
                    f"| {r.tool} | {p['threshold']} | {p['pairs']:,} | {p['precision']:.4f} "
                    f"| {p['recall']:.4f} | {p['f1']:.4f} |"
                )
    notes = [r for r in results if not r.skipped and not r.stable]
    for r in notes:
        print(f"\nnote: {r.tool} predicted different pairs in different runs; metrics are run 1's")


def label(r: Result) -> str:
    if r.tool == "splink":
        return f"Splink (plain text, p ≥ {r.settings.get('threshold_match_probability')})"
    if r.tool == "anonlink":
        return f"clkhash + anonlink (CLK, Dice ≥ {r.settings.get('threshold')}, greedy 1:1)"
    if r.tool == "ours":
        return str(r.settings.get("label"))
    return r.tool


def main_compare(args) -> int:
    try:
        files = read_files(args.a, args.b)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    truth = files.true_pairs()
    tools = [t for t in args.tools.split(",") if t]
    unknown = [t for t in tools if t not in PACKAGES]
    if unknown:
        print(f"error: --tools: unknown {unknown}; choose from {sorted(PACKAGES)}", file=sys.stderr)
        return 2
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix="skp-compare-") as tmp:
            for tool in tools:
                r = run_tool(tool, args, files, truth, Path(tmp))
                if r.skipped:
                    print(f"skipped {tool}: {r.skipped}", file=sys.stderr)
                results.append(r)
            if args.ours is not None:
                results.append(ours_result(args, files, truth))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print_table(results, len(truth), len(files.a_ids), len(files.b_ids), args.runs)
    report = {
        "bench": "linkage-compare",
        "records_a": len(files.a_ids),
        "records_b": len(files.b_ids),
        "true_pairs": len(truth),
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "results": [r.json() for r in results],
    }
    print()
    print(json.dumps(report, ensure_ascii=False))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    return 0


# --------------------------------------------------------------------------------------------
# Workers: one tool, one run, in its own process.
# --------------------------------------------------------------------------------------------


def versions(names: list[str]) -> dict:
    from importlib import metadata

    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_frame(path: Path):
    """A pair file as a pandas frame of strings, without true_id (the linkers never see it)."""
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return df.drop(columns=["true_id"])


def normalise(df):
    """The same light cleaning for every tool: lower-case names, upper-case postcode."""
    df = df.copy()
    df["forename"] = df["forename"].str.strip().str.lower()
    df["surname"] = df["surname"].str.strip().str.lower()
    df["postcode"] = df["postcode"].str.strip().str.upper()
    return df


def splink_comparisons() -> list:
    """The Splink comparisons every comparison here uses (also ``splink_nodes.py``): names by
    Jaro-Winkler levels with term-frequency adjustment, date of birth, sex, postcode."""
    import splink.comparison_library as cl

    return [
        cl.NameComparison("forename").configure(term_frequency_adjustments=True),
        cl.NameComparison("surname").configure(term_frequency_adjustments=True),
        cl.DateOfBirthComparison("dob", input_is_string=True),
        cl.ExactMatch("sex"),
        cl.PostcodeComparison("postcode"),
    ]


def worker_splink(args, out: Path) -> dict:
    import inspect
    import logging

    import splink
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    df_a = normalise(load_frame(args.a))
    df_b = normalise(load_frame(args.b))
    a_ids = set(df_a["rec_id"])
    df_a = df_a.replace({"": None})
    df_b = df_b.replace({"": None})

    settings = SettingsCreator(
        link_type="link_only",
        unique_id_column_name="rec_id",
        comparisons=splink_comparisons(),
        blocking_rules_to_generate_predictions=[
            block_on("dob"),
            block_on("surname", "substr(dob, 1, 4)"),
            block_on("forename", "substr(dob, 6, 2)"),
            block_on("postcode", "substr(surname, 1, 1)"),
        ],
        retain_intermediate_calculation_columns=False,
    )

    t0 = time.perf_counter()
    db_api = DuckDBAPI()
    linker_params = inspect.signature(Linker.__init__).parameters
    if "db_api" in linker_params:  # Splink 4.x
        linker = Linker(
            [df_a, df_b],
            settings,
            db_api=db_api,
            input_table_aliases=["a", "b"],
            set_up_basic_logging=False,
        )
    else:  # Splink 5.x: tables are registered with the database API first
        sdf_a = db_api.register(df_a, dataset_display_name="a")
        sdf_b = db_api.register(df_b, dataset_display_name="b")
        linker = Linker([sdf_a, sdf_b], settings, log_level=logging.WARNING)
    logging.getLogger("splink").setLevel(logging.WARNING)
    t1 = time.perf_counter()
    linker.training.estimate_probability_two_random_records_match(
        [block_on("forename", "surname", "dob")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("forename", "surname")
    )
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    t2 = time.perf_counter()
    predicted = linker.inference.predict(threshold_match_probability=args.splink_threshold)
    pdf = predicted.as_pandas_dataframe()
    pairs = oriented(pdf["rec_id_l"], pdf["rec_id_r"], a_ids)
    t3 = time.perf_counter()

    write_pairs(out / "pairs.csv", pairs)
    sweep = []
    if args.sweep:
        low = linker.inference.predict(threshold_match_probability=min(SPLINK_SWEEP))
        ldf = low.as_pandas_dataframe()
        for th in SPLINK_SWEEP:
            sel = ldf[ldf["match_probability"] >= th]
            name = f"sweep-{th}.csv"
            write_pairs(out / name, oriented(sel["rec_id_l"], sel["rec_id_r"], a_ids))
            sweep.append({"threshold": th, "file": name})
    return {
        "versions": versions(PACKAGES["splink"]),
        "settings": {
            "backend": "duckdb",
            "link_type": "link_only",
            "threshold_match_probability": args.splink_threshold,
            "blocking": [
                "dob",
                "surname + year of birth",
                "forename + month of birth",
                "postcode + surname initial",
            ],
            "comparisons": [
                "NameComparison(forename, tf)",
                "NameComparison(surname, tf)",
                "DateOfBirthComparison(dob)",
                "ExactMatch(sex)",
                "PostcodeComparison(postcode)",
            ],
            "training": "lambda from forename+surname+dob (recall 0.7); u random sampling "
            "1e6 pairs seed 1; m by EM on forename+surname and on dob",
            "splink_version": splink.__version__,
        },
        "timing": {
            "prepare_s": t1 - t0,
            "train_s": t2 - t1,
            "match_s": t3 - t2,
            "total_s": t3 - t0,
        },
        "sweep": sweep,
    }


def oriented(left, right, a_ids: set[str]) -> set[tuple[str, str]]:
    """(a, b) pairs from Splink's (l, r) columns, whichever side each id came from."""
    return {(l, r) if l in a_ids else (r, l) for l, r in zip(left, right)}


def clk_schema() -> dict:
    """The linkage schema (clkhash v3): 1024 bits, HKDF per feature, double hashing."""

    def text(identifier: str, bits: int, missing: bool = False) -> dict:
        hashing = {
            "comparison": {"type": "ngram", "n": 2},
            "strategy": {"bitsPerFeature": bits},
            "hash": {"type": "doubleHash"},
        }
        if missing:
            hashing["missingValue"] = {"sentinel": ""}
        return {
            "identifier": identifier,
            "format": {"type": "string", "encoding": "utf-8", "case": "lower"},
            "hashing": hashing,
        }

    postcode = text("postcode", 100, missing=True)
    postcode["format"]["case"] = "upper"
    return {
        "version": 3,
        "clkConfig": {
            "l": 1024,
            "kdf": {
                "type": "HKDF",
                "hash": "SHA256",
                # Fixed, public salt and info: the secret is what keys the encoding.
                "salt": "c2twLWJlbmNoLWNvbXBhcmUtc2FsdA==",
                "info": "c2twLWNvbXBhcmUtY2xr",
                "keySize": 64,
            },
        },
        "features": [
            {"identifier": "rec_id", "ignored": True},
            text("forename", 200),
            text("surname", 200),
            {
                "identifier": "dob",
                "format": {"type": "date", "format": "%Y-%m-%d"},
                "hashing": {
                    "comparison": {"type": "ngram", "n": 1, "positional": True},
                    "strategy": {"bitsPerFeature": 200},
                    "hash": {"type": "doubleHash"},
                },
            },
            {
                "identifier": "sex",
                "format": {"type": "enum", "values": ["F", "M"]},
                "hashing": {
                    "comparison": {"type": "ngram", "n": 1},
                    "strategy": {"bitsPerFeature": 50},
                    "hash": {"type": "doubleHash"},
                },
            },
            postcode,
        ],
    }


def worker_anonlink(args, out: Path) -> dict:
    from anonlink import candidate_generation, similarities, solving
    from clkhash import clk
    from clkhash.schema import from_json_dict

    schema = from_json_dict(clk_schema())
    cols = ["rec_id", "forename", "surname", "dob", "sex", "postcode"]
    df_a = normalise(load_frame(args.a))[cols]
    df_b = normalise(load_frame(args.b))[cols]
    rows_a = df_a.values.tolist()
    rows_b = df_b.values.tolist()
    ids_a = [r[0] for r in rows_a]
    ids_b = [r[0] for r in rows_b]

    t0 = time.perf_counter()
    clks_a = clk.generate_clks(rows_a, schema, CLK_SECRET)
    clks_b = clk.generate_clks(rows_b, schema, CLK_SECRET)
    t1 = time.perf_counter()
    candidates = candidate_generation.find_candidate_pairs(
        [clks_a, clks_b], similarities.dice_coefficient_accelerated, args.anonlink_threshold
    )
    groups = solving.greedy_solve(candidates)
    pairs = groups_to_pairs(groups, ids_a, ids_b)
    t2 = time.perf_counter()

    write_pairs(out / "pairs.csv", pairs)
    sweep = []
    if args.sweep:
        low = candidate_generation.find_candidate_pairs(
            [clks_a, clks_b], similarities.dice_coefficient_accelerated, min(ANONLINK_SWEEP)
        )
        sims, (dset0, dset1), (rec0, rec1) = low
        for th in ANONLINK_SWEEP:
            keep = [i for i, s in enumerate(sims) if s >= th]
            sub = (
                type(sims)(sims.typecode, (sims[i] for i in keep)),
                tuple(type(d)(d.typecode, (d[i] for i in keep)) for d in (dset0, dset1)),
                tuple(type(r)(r.typecode, (r[i] for i in keep)) for r in (rec0, rec1)),
            )
            name = f"sweep-{th}.csv"
            write_pairs(out / name, groups_to_pairs(solving.greedy_solve(sub), ids_a, ids_b))
            sweep.append({"threshold": th, "file": name})
    popcounts = [c.count() for c in clks_a[:1000]]
    return {
        "versions": versions(PACKAGES["anonlink"]),
        "settings": {
            "threshold": args.anonlink_threshold,
            "clk_bits": 1024,
            "features": "forename, surname: bigrams 200 bits each; dob: positional unigrams "
            "200 bits; sex: 50 bits; postcode: bigrams 100 bits; doubleHash; HKDF-SHA256",
            "solver": "greedy_solve",
            "candidates": len(candidates[0]),
            "mean_popcount_first_1000": round(sum(popcounts) / max(len(popcounts), 1), 1),
            "encode_workers": "clkhash default (one process per CPU)",
        },
        "timing": {
            "prepare_s": t1 - t0,
            "train_s": None,
            "match_s": t2 - t1,
            "total_s": t2 - t0,
        },
        "sweep": sweep,
    }


def groups_to_pairs(groups, ids_a: list[str], ids_b: list[str]) -> set[tuple[str, str]]:
    """(a, b) rec_id pairs from anonlink's groups of (dataset index, record index)."""
    pairs = set()
    for g in groups:
        a = [rec for ds, rec in g if ds == 0]
        b = [rec for ds, rec in g if ds == 1]
        pairs.update((ids_a[i], ids_b[j]) for i in a for j in b)
    return pairs


def main_worker(args) -> int:
    tool = args.worker
    out = args.worker_out
    try:
        if tool == "splink":
            import duckdb  # noqa: F401
            import pandas
            import splink  # noqa: F401
            from splink import DuckDBAPI  # noqa: F401
        else:
            import anonlink  # noqa: F401
            import clkhash  # noqa: F401
            import pandas  # noqa: F401
            from anonlink import candidate_generation, similarities, solving  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        print(
            f"{tool}: cannot import its packages ({type(e).__name__}: {e}); "
            "install them with scripts/linkage-compare.sh"
        )
        return EXIT_UNAVAILABLE
    report = worker_splink(args, out) if tool == "splink" else worker_anonlink(args, out)
    report["timing"]["peak_rss_mib"] = peak_rss_mib()
    (out / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------
# Self-test of the scoring path (standard library only).
# --------------------------------------------------------------------------------------------


def selftest() -> int:
    """Scores an exact-match pairs file on a tiny hand-made case through the ``--ours`` path."""
    a_rows = [
        ["A1", "ann", "lee", "1990-01-02", "F", "KT1 1AA", "1"],
        ["A2", "bob", "ray", "1980-05-06", "M", "KT2 2BB", "2"],
        ["A3", "cy", "fox", "1970-03-04", "M", "KT3 3DD", "3"],
        ["A4", "di", "oak", "1960-07-08", "F", "KT4 4EE", "4"],
        ["A5", "di", "oak", "1960-07-08", "F", "KT4 4EE", "4"],  # a duplicate record
    ]
    b_rows = [
        ["B1", "ann", "lee", "1990-01-02", "F", "KT1 1AA", "1"],
        ["B2", "rob", "ray", "1980-05-06", "M", "KT2 2BB", "2"],  # a nickname
        ["B3", "di", "oak", "1960-07-08", "F", "KT4 4EE", "4"],
        ["B4", "eve", "elm", "1950-09-10", "F", "KT5 5FF", "5"],
    ]
    with tempfile.TemporaryDirectory(prefix="skp-compare-selftest-") as tmp:
        d = Path(tmp)
        for name, rows in (("a.csv", a_rows), ("b.csv", b_rows)):
            with (d / name).open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(HEADER)
                w.writerows(rows)
        files = read_files(d / "a.csv", d / "b.csv")
        truth = files.true_pairs()
        assert truth == {("A1", "B1"), ("A2", "B2"), ("A4", "B3"), ("A5", "B3")}, truth
        exact = {(ra[0], rb[0]) for ra in a_rows for rb in b_rows if ra[1:4] == rb[1:4]}
        write_pairs(d / "ours.csv", exact)
        got = score(read_pairs(d / "ours.csv", files), truth)
        assert (got["tp"], got["fp"], got["fn"]) == (3, 0, 1), got
        assert (got["precision"], got["recall"]) == (1.0, 0.75), got
        assert got["f1"] == round(2 * 0.75 / 1.75, 4), got
        # A false pair counts as a false positive.
        write_pairs(d / "ours.csv", exact | {("A3", "B4")})
        got = score(read_pairs(d / "ours.csv", files), truth)
        assert (got["tp"], got["fp"], got["precision"]) == (3, 1, 0.75), got
        # Refusals name the file and line.
        for bad, needle in (
            ("a_rec_id,b_rec_id\nB1,A1\n", "columns swapped"),
            ("a_rec_id,b_rec_id\nA1,B9\n", "b_rec_id is not a rec_id"),
            ("x,y\nA1,B1\n", "expected a_rec_id,b_rec_id"),
            ("a_rec_id,b_rec_id\nA1\n", "1 columns"),
        ):
            (d / "bad.csv").write_text(bad)
            try:
                read_pairs(d / "bad.csv", files)
            except InputError as e:
                assert needle in str(e) and "bad.csv:" in str(e), str(e)
            else:
                raise AssertionError(f"accepted a bad pairs file ({needle})")
        (d / "b.csv").write_text("rec_id,name\n")
        try:
            read_files(d / "a.csv", d / "b.csv")
        except InputError as e:
            assert "b.csv:1: header" in str(e), str(e)
        else:
            raise AssertionError("accepted a bad header")
    print("compare.py selftest: 8 passed, 0 failed")
    return 0


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(
        description="Compare Splink and clkhash+anonlink (and our pairs) on bench pair files."
    )
    p.add_argument("--data", type=Path, help="directory holding a.csv and b.csv (bench pair --out)")
    p.add_argument("--a", type=Path, help="agency A file (default DATA/a.csv)")
    p.add_argument("--b", type=Path, help="agency B file (default DATA/b.csv)")
    p.add_argument("--runs", type=int, default=3, help="runs per tool; times are the median")
    p.add_argument("--tools", default="splink,anonlink", help="comma-separated: splink,anonlink")
    p.add_argument(
        "--splink-threshold",
        type=float,
        default=0.5,
        help="Splink match_probability threshold (default 0.5)",
    )
    p.add_argument(
        "--anonlink-threshold",
        type=float,
        default=0.8,
        help="anonlink Dice threshold (default 0.8, the clkhash tutorial's)",
    )
    p.add_argument("--no-sweep", action="store_true", help="skip the untimed threshold sweep")
    p.add_argument(
        "--ours",
        type=Path,
        help="CSV of our predicted pairs, header a_rec_id,b_rec_id, scored the same way",
    )
    p.add_argument("--ours-seconds", type=float, help="wall-clock seconds our matcher took")
    p.add_argument(
        "--ours-encode-seconds",
        type=float,
        help="wall-clock seconds our encoding (the agents' keyed tokens) took",
    )
    p.add_argument(
        "--ours-label",
        default="ours (skp_core::fuzzy::link)",
        help="row label for --ours in the table",
    )
    p.add_argument("--ours-rss-mib", type=float, help="peak RSS of our matcher, MiB")
    p.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    p.add_argument("--selftest", action="store_true", help="check the scoring path and exit")
    p.add_argument("--worker", choices=sorted(PACKAGES), help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.selftest:
        return args
    if args.data is not None:
        args.a = args.a or args.data / "a.csv"
        args.b = args.b or args.data / "b.csv"
    if args.a is None or args.b is None:
        p.error("give --data DIR (or --a FILE --b FILE)")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.ours_seconds is not None and args.ours is None:
        p.error("--ours-seconds needs --ours PATH")
    if args.worker and args.worker_out is None:
        p.error("--worker needs --worker-out")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.selftest:
        return selftest()
    if args.worker:
        return main_worker(args)
    return main_compare(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
