"""Leave-one-source-out evaluation of the injection detector: the table in docs/ANOMALY_DETECTION.md.

Run: ``.venv/bin/python scripts/evaluate_injection_model.py`` (after ``pip install -e '.[train]'``; ``--cache DIR``
for the wheels, ``--write-docs`` to replace the table between its markers in docs/ANOMALY_DETECTION.md).

For every source S: the whole training recipe of scripts/train_injection_model.py (C and the operating point chosen
by cross-validation over the other sources) runs on all sources but S, and the model is tested on S alone, at its
operating point (score 0.5) and with the patterns beside it (the gateway's rule: the higher score counts, at the
default threshold 0.5). Nothing is tuned on S. Reported per left-out source: recall on its attacks, the
false-positive rate on its benign prompts and the over-defence rate on its benign prompts with trigger words
("ignore", "system", "password", "act as", …: tests/exporter/gateway/guard/data/evaluation.py); then the macro
averages over the sources that have attacks, benign prompts, trigger-word prompts.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import injection_sources as sources  # noqa: E402
import train_injection_model as recipe  # noqa: E402

from singularity_ops.exporter.gateway.guard.injection import InjectionScorer  # noqa: E402

DOC = REPO / "docs" / "ANOMALY_DETECTION.md"
BEGIN, END = "<!-- loso-table:begin -->", "<!-- loso-table:end -->"


def rate(hits: np.ndarray, chosen: np.ndarray) -> float | None:
    return float(hits[chosen].mean()) if chosen.any() else None


def cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def left_out(data: recipe.Data, patterns: np.ndarray, name: str) -> dict:
    started = time.monotonic()
    test = np.where(data.source == name)[0]
    trained = recipe.train(data, np.where(data.source != name)[0])
    model = data.margins(trained.model, test) >= trained.margin
    both = model | (patterns[test] >= 0.5)
    attack, trigger = data.y[test], data.trigger[test]
    row = {"source": name, "attacks": int(attack.sum()), "benign": int((~attack).sum()),
           "trigger": int(trigger.sum()), "c": trained.c, "model_recall": rate(model, attack),
           "pattern_recall": rate(patterns[test] >= 0.5, attack), "recall": rate(both, attack),
           "fpr": rate(both, ~attack), "model_fpr": rate(model, ~attack), "overdefence": rate(both, trigger)}
    print(f"{name}: C={trained.c:g}, recall {cell(row['recall'])}, FPR {cell(row['fpr'])} "
          f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    return row


def evaluate(data: recipe.Data, patterns: np.ndarray, jobs: int = 1) -> list[dict]:
    """One row per source, in the sources' order; ``jobs`` left-out sources at a time."""
    names = list(dict.fromkeys(data.source))
    return Parallel(n_jobs=jobs)(delayed(left_out)(data, patterns, name) for name in names)


def macro(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if row[key] is not None]
    return float(np.mean(values)) if values else None


def table(rows: list[dict], total: int) -> str:
    lines = [f"Leave-one-source-out, {len(rows)} sources, {total} prompts (`scripts/evaluate_injection_model.py`). "
             "Recall: attacks found; FPR: benign prompts flagged; over-defence: benign prompts with trigger words "
             "flagged. *model*: the learned stage alone at its operating point; *patterns*: the first stage alone; "
             "*both*: the gateway's rule (the higher score, threshold 0.5).",
             "",
             "| left-out source | attacks | benign (trigger words) | C | recall: model | patterns | **both** "
             "| FPR: model | **both** | over-defence: **both** |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['source']} | {row['attacks']} | {row['benign']} ({row['trigger']}) | {row['c']:g} "
                     f"| {cell(row['model_recall'])} | {cell(row['pattern_recall'])} | **{cell(row['recall'])}** "
                     f"| {cell(row['model_fpr'])} | **{cell(row['fpr'])}** | **{cell(row['overdefence'])}** |")
    lines.append(f"| **macro average** | | | | {cell(macro(rows, 'model_recall'))} "
                 f"| {cell(macro(rows, 'pattern_recall'))} | **{cell(macro(rows, 'recall'))}** "
                 f"| {cell(macro(rows, 'model_fpr'))} | **{cell(macro(rows, 'fpr'))}** "
                 f"| **{cell(macro(rows, 'overdefence'))}** |")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{DOC} has no {BEGIN} … {END} markers")
    DOC.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", doc), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=sources.DEFAULT_CACHE, help="folder for the pinned wheels")
    parser.add_argument("--jobs", type=int, default=1, help="left-out sources trained at a time (memory: ~1 GB each)")
    parser.add_argument("--write-docs", action="store_true", help=f"replace the table in {DOC.name}")
    args = parser.parse_args()
    samples = sources.load_all(args.cache)
    data = recipe.Data.build(samples, recipe.featurizer())
    scorer = InjectionScorer()
    patterns = np.array([scorer.score(sample.text).score for sample in samples])
    text = table(evaluate(data, patterns, args.jobs), len(samples))
    print(text)
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
