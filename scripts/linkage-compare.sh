#!/usr/bin/env bash
# Fuzzy person linkage compared on one synthetic two-agency case, in one run: Splink (plain
# text, DuckDB) and clkhash + anonlink (Bloom-filter CLKs) on the same `bench pair` files,
# scored against the hidden truth by bench/compare/compare.py (Markdown table + JSON line).
#
#   scripts/linkage-compare.sh [--persons N] [--overlap S] [--seed N] [--runs N] [--out DIR]
#                              [-- extra compare.py options]
#
# Installs the Python tools from PyPI into target/compare-venv (or $COMPARE_VENV; pinned in
# bench/compare/requirements.txt) and reuses that venv on later runs; PYTHON picks the Python. A tool that cannot be
# installed or imported (no network, no wheel for this Python, ...) is skipped with a message;
# the script then still exits 0. It exits non-zero on a real error (build, bench pair, a tool
# that fails while linking, bad input).
#
# Our own matcher: set OURS_PAIRS=FILE (CSV `a_rec_id,b_rec_id`, the pairs it predicted on
# $OUT/a.csv and $OUT/b.csv), OURS_SECONDS=X (and OURS_LABEL=text) to score it by the same
# code instead of running `bench pair-link` (the OURS block below).
set -euo pipefail
cd "$(dirname "$0")/.."

persons=5000
overlap=0.5
seed=1
runs=3
out=target/linkage-compare
while [ $# -gt 0 ]; do
  case "$1" in
    --persons) persons="$2"; shift 2 ;;
    --overlap) overlap="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "linkage-compare: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

venv="${COMPARE_VENV:-target/compare-venv}"
req=bench/compare/requirements.txt
compare=bench/compare/compare.py

echo "== cargo build --release -p bench"
cargo build --release --locked -p bench

echo "== bench pair --out $out --persons $persons --overlap $overlap --seed $seed"
target/release/bench pair --out "$out" --persons "$persons" --overlap "$overlap" --seed "$seed"

# ---- Python and the venv ---------------------------------------------------------------------
python="${PYTHON:-python3}"
skip_all() {
  echo "linkage-compare: SKIPPED Splink and clkhash+anonlink: $1" >&2
  echo "linkage-compare: the pair files are in $out; nothing was compared." >&2
  exit 0
}
if ! command -v "$python" >/dev/null; then
  skip_all "no $python on PATH (set PYTHON=/path/to/python3.11)"
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  skip_all "$python is $("$python" -V 2>&1); Python 3.11 or later is needed (set PYTHON=...)"
fi
echo "== compare.py --selftest (scoring path, standard library only)"
"$python" "$compare" --selftest

if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  if ! "$python" -m venv "$venv"; then
    rm -rf "$venv"
    skip_all "'$python -m venv' failed (Debian: apt-get install python3-venv)"
  fi
fi
vpy="$venv/bin/python"
log="$venv/pip-install.log"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
pip_install() {
  # Short timeouts: offline, pip otherwise retries for many minutes before giving up.
  "$vpy" -m pip install --disable-pip-version-check --timeout 30 --retries 1 "$@" >>"$log" 2>&1
}
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== pip install -r $req into $venv (log: $log)"
  : >"$log"
  if pip_install -r "$req"; then
    echo "$want" >"$stamp"
  else
    echo "linkage-compare: installing all of $req failed; trying each tool alone" >&2
    tail -n 5 "$log" | sed 's/^/  pip: /' >&2
    pip_install -c "$req" splink duckdb pandas || true
    pip_install -c "$req" clkhash anonlink pandas || true
  fi
fi

# ---- Which tools import ----------------------------------------------------------------------
tools=()
if "$vpy" -c 'import splink, duckdb, pandas; from splink import DuckDBAPI' >/dev/null 2>&1; then
  tools+=(splink)
else
  echo "linkage-compare: SKIPPED Splink: 'import splink, duckdb, pandas' fails in $venv." \
    "Install needs PyPI (splink $(grep -oP '^splink==\K.*' "$req"), duckdb, pandas); see $log." >&2
fi
if "$vpy" -c 'import clkhash, anonlink, pandas; from anonlink import candidate_generation, solving' \
  >/dev/null 2>&1; then
  tools+=(anonlink)
else
  echo "linkage-compare: SKIPPED clkhash+anonlink: 'import clkhash, anonlink' fails in $venv." \
    "They are reference implementations last released 2023-05 (clkhash 0.18.3 pins" \
    "cryptography 40.0.2; anonlink 0.15.3 ships cp311 manylinux wheels, elsewhere it builds" \
    "a C extension and needs gcc, the Python headers and Cython). Tried: the pinned set, then" \
    "clkhash+anonlink alone; see $log." >&2
fi
if [ ${#tools[@]} -eq 0 ] && [ -z "${OURS_PAIRS:-}" ]; then
  skip_all "neither tool could be installed or imported (offline?); see $log"
fi

# ---- OURS: our Rust matcher (skp_core::fuzzy::link) ------------------------------------------
# `bench pair-link` encodes both files as the agents do (keyed per-field tokens) and links them
# as the gateway does (EM-estimated model, blocking, scoring, clustering); it times the two
# apart (medians of $runs runs) and writes its predicted pairs for compare.py to score.
# OURS_PAIRS / OURS_SECONDS from the environment replace it (to score another run).
if [ -z "${OURS_PAIRS:-}" ]; then
  echo "== bench pair-link (ours)"
  ours_json="$(target/release/bench pair-link --data "$out" --out "$out/ours.csv" --runs "$runs")"
  echo "$ours_json"
  OURS_PAIRS="$out/ours.csv"
  OURS_SECONDS="$(echo "$ours_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["match_secs"])')"
  OURS_ENCODE_SECONDS="$(echo "$ours_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["encode_secs"])')"
  OURS_RSS="$(echo "$ours_json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["peak_rss_mib"] or "")')"
  OURS_LABEL="${OURS_LABEL:-skp fuzzy (keyed tokens + Fellegi-Sunter, default threshold)}"
fi
ours=()
if [ -n "${OURS_PAIRS:-}" ]; then
  ours=(--ours "$OURS_PAIRS")
  if [ -n "${OURS_SECONDS:-}" ]; then ours+=(--ours-seconds "$OURS_SECONDS"); fi
  if [ -n "${OURS_ENCODE_SECONDS:-}" ]; then ours+=(--ours-encode-seconds "$OURS_ENCODE_SECONDS"); fi
  if [ -n "${OURS_RSS:-}" ]; then ours+=(--ours-rss-mib "$OURS_RSS"); fi
  if [ -n "${OURS_LABEL:-}" ]; then ours+=(--ours-label "$OURS_LABEL"); fi
fi

echo "== compare.py (${tools[*]:-no tools}${OURS_PAIRS:+ + ours}), $runs run(s) each"
tool_list="$(IFS=,; echo "${tools[*]:-}")"
"$vpy" "$compare" --data "$out" --runs "$runs" --tools "$tool_list" \
  --json-out "$out/report.json" ${ours[@]+"${ours[@]}"} "$@"
