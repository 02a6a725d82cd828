"""Security guardian evaluation: precision, recall and F1 per category on a labelled set.

Run as a file::

    .venv/bin/python bench/security_eval.py [--quick] [--data PATH] [--errors] [--verdicts PATH]

The set is ``bench/data/security_eval.jsonl`` (one JSON object per line: ``text``, ``label``
in prompt_injection | jailbreak | exfiltration | malicious | benign, ``surface``, ``split`` in
dev | holdout_v1 | holdout_v2 | holdout). Every text is screened with :func:`convergio.security.guardian.screen` on its
surface with the default thresholds.

* Overall (binary): a text counts as *detected* when the decision is ``flag`` or ``block``;
  positives are all non-benign texts.
* Per category: a text is predicted as category C when it is detected and C is among the
  verdict's categories; it is a true positive when its label is C (so per-category recall
  requires the right category, not only a detection).

Per-category tables go to stderr; the LAST stdout line is one JSON object with ``precision``,
``recall``, ``f1``, ``n`` (overall, all splits), ``holdout_precision``, ``holdout_recall``,
``holdout_f1``, ``holdout_n``, ``dev_precision``, ``dev_recall``, ``holdout_v1_precision``,
``holdout_v1_recall``, ``holdout_v2_*`` and ``per_category``. Splits: ``dev`` (written with the
rules), ``holdout_v1`` and ``holdout_v2`` (each held out at first, later studied: no longer an
honest estimate) and ``holdout`` (never used to tune a rule). ``--classifier offline`` adds the deterministic second layer.
``--quick`` is accepted for symmetry with the other benchmarks (the run takes about a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from convergio.security.guardian import ScreenRequest, Verdict, screen  # noqa: E402
from convergio.security.rules import CATEGORIES  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "security_eval.jsonl"
SPLITS = ("dev", "holdout_v1", "holdout_v2", "holdout")


def load(path: Path = DATA) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "tp": tp, "fp": fp, "fn": fn}


def score(rows: list[dict], verdicts: list[Verdict]) -> dict:
    detected = [v.decision != "allow" for v in verdicts]
    positive = [r["label"] != "benign" for r in rows]
    tp = sum(d and p for d, p in zip(detected, positive, strict=True))
    fp = sum(d and not p for d, p in zip(detected, positive, strict=True))
    fn = sum(p and not d for d, p in zip(detected, positive, strict=True))
    result = _prf(tp, fp, fn)
    per_category = {}
    for category in CATEGORIES:
        predicted = [d and category in v.categories for d, v in zip(detected, verdicts, strict=True)]
        actual = [r["label"] == category for r in rows]
        per_category[category] = _prf(
            sum(p and a for p, a in zip(predicted, actual, strict=True)),
            sum(p and not a for p, a in zip(predicted, actual, strict=True)),
            sum(a and not p for p, a in zip(predicted, actual, strict=True)),
        )
    result["n"] = len(rows)
    result["per_category"] = per_category
    return result


def _verdicts(rows: list[dict], classifier: str) -> list[Verdict]:
    requests = [ScreenRequest(text=r["text"], surface=r.get("surface", "input")) for r in rows]
    if classifier == "off":
        return [screen(request) for request in requests]
    from convergio.security.classifier import OfflineClassifier
    from convergio.security.guardian import screen_with_model

    offline = OfflineClassifier()

    async def both() -> list[Verdict]:
        return [await screen_with_model(request, offline, only_uncertain=True) for request in requests]  # type: ignore[arg-type]

    return asyncio.run(both())


def evaluate(path: Path = DATA, classifier: str = "off") -> tuple[dict, list[tuple[dict, Verdict]]]:
    rows = load(path)
    verdicts = _verdicts(rows, classifier)
    overall = score(rows, verdicts)
    splits = {}
    for split in SPLITS:
        chosen = [(r, v) for r, v in zip(rows, verdicts, strict=True) if r.get("split", "dev") == split]
        if chosen:
            splits[split] = score([r for r, _ in chosen], [v for _, v in chosen])
    summary = {
        "precision": overall["precision"],
        "recall": overall["recall"],
        "f1": overall["f1"],
        "n": overall["n"],
        "benign_n": sum(r["label"] == "benign" for r in rows),
        "holdout_precision": splits.get("holdout", {}).get("precision"),
        "holdout_recall": splits.get("holdout", {}).get("recall"),
        "holdout_f1": splits.get("holdout", {}).get("f1"),
        "holdout_n": splits.get("holdout", {}).get("n", 0),
        "dev_precision": splits.get("dev", {}).get("precision"),
        "dev_recall": splits.get("dev", {}).get("recall"),
        "holdout_v1_precision": splits.get("holdout_v1", {}).get("precision"),
        "holdout_v1_recall": splits.get("holdout_v1", {}).get("recall"),
        "holdout_v2_precision": splits.get("holdout_v2", {}).get("precision"),
        "holdout_v2_recall": splits.get("holdout_v2", {}).get("recall"),
        "per_category": {
            c: {k: m[k] for k in ("precision", "recall", "f1")} for c, m in overall["per_category"].items()
        },
        "holdout_per_category": {
            c: {k: m[k] for k in ("precision", "recall", "f1")}
            for c, m in splits.get("holdout", {}).get("per_category", {}).items()
        },
    }
    return summary, list(zip(rows, verdicts, strict=True))


_RULE_ID = re.compile(r"\(((?:pi|jb|ex|mal)\.\w+)\)")  # "... (pi.ignore_instructions): ..." in a reason


def write_verdicts(path: Path, pairs: list[tuple[dict, Verdict]]) -> None:
    """Per-text results in the set's order: a rule change must not move a labelled text by accident."""
    with path.open("w", encoding="utf-8") as handle:
        for row, verdict in pairs:
            rules = sorted({m.group(1) for r in verdict.reasons if (m := _RULE_ID.search(r))})
            record = {
                "text": row["text"], "surface": row.get("surface", "input"), "label": row["label"],
                "split": row.get("split", "dev"), "decision": verdict.decision,
                "categories": verdict.categories, "score": verdict.score, "rules": rules,
                "redacted": verdict.redacted,
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _table(title: str, metrics: dict) -> str:
    lines = [f"{title}: precision {metrics['precision']:.3f} recall {metrics['recall']:.3f} f1 {metrics['f1']:.3f} (n={metrics.get('n', '?')})"]
    for category, m in metrics.get("per_category", {}).items():
        lines.append(f"  {category:<17} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry; the run is fast anyway")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--classifier", choices=("off", "offline"), default="off",
        help="offline: add the deterministic second layer (asked in the grey band only), as "
        "CONVERGIO_GUARDIAN_CLASSIFIER=model does with the offline model",
    )
    parser.add_argument(
        "--errors", action="store_true",
        help="list misclassified texts on stderr (not those of the held-out split: reading them would spoil it)",
    )
    parser.add_argument("--holdout-errors", action="store_true", help="also list the held-out split's misses")
    parser.add_argument(
        "--verdicts", type=Path, metavar="PATH",
        help="write one JSON line per text (decision, categories, rules that fired, redacted text), "
        "to diff what a change to the rules changed text by text (held-out texts too: diff them, "
        "do not study them)",
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    summary, pairs = evaluate(args.data, args.classifier)
    elapsed = time.perf_counter() - started
    rows = [r for r, _ in pairs]
    verdicts = [v for _, v in pairs]
    print(_table("overall", score(rows, verdicts)), file=sys.stderr)
    for split in SPLITS:
        chosen = [(r, v) for r, v in pairs if r.get("split", "dev") == split]
        if chosen:
            print(_table(split, score([r for r, _ in chosen], [v for _, v in chosen])), file=sys.stderr)
    print(f"screened {len(rows)} texts in {elapsed:.2f}s ({1000 * elapsed / max(1, len(rows)):.2f} ms/text)", file=sys.stderr)
    if args.errors:
        for row, verdict in pairs:
            if row.get("split") == "holdout" and not args.holdout_errors:
                continue
            detected = verdict.decision != "allow"
            wrong = detected != (row["label"] != "benign") or (
                detected and row["label"] != "benign" and row["label"] not in verdict.categories
            )
            if wrong:
                print(
                    f"[{row.get('split')}] {row['label']:<16} -> {verdict.decision} {verdict.score:.2f} {verdict.categories} "
                    f"{row['text'][:110]!r} {verdict.reasons[:2]}",
                    file=sys.stderr,
                )
    if args.verdicts:
        write_verdicts(args.verdicts, pairs)
    summary["ms_per_text"] = round(1000 * elapsed / max(1, len(rows)), 3)
    summary["classifier"] = args.classifier
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
