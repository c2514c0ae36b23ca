"""How well `auto` routing generalises: grouped cross-validation by source over the labeled
corpus (corpus/prompts.jsonl). For each source, the model and its thresholds are trained on
the other sources only, then that source's prompts are routed. `./scripts/route-report`;
`./scripts/route-report --final` routes corpus/final-test.jsonl, a source nothing was trained
or tuned on, with the model (and thresholds) trained as route-train does on all the corpus."""

from __future__ import annotations

import bisect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentbox.routing.model import MODES
from agentbox.routing.training import PICK_MARGIN, RECALL, evaluate, load_corpus, predict, train

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "prompts.jsonl"
FINAL = CORPUS.with_name("final-test.jsonl")
TRADES = {
    "cost": "fewer cloud calls: keeps more light work local and lets more heavy work stay local",
    "balanced": "the default: heavy prompts to the cloud first, light ones local where it can",
    "quality": "almost every heavy prompt to the cloud, at the price of more light ones too",
}


def rates(entries: Sequence[dict[str, Any]], mode: str) -> dict[str, Any]:
    heavy = [e for e in entries if e["heavy"]]
    light = [e for e in entries if not e["heavy"]]
    up = sum(e[mode] for e in heavy)
    down = sum(1 - e[mode] for e in light)
    return {
        "heavy_to_cloud": f"{up:.0f}/{len(heavy)}" + (f" ({up / len(heavy):.1%})" if heavy else ""),
        "light_to_local": f"{down:.0f}/{len(light)}"
        + (f" ({down / len(light):.1%})" if light else ""),
    }


def ranking(entries: Sequence[dict[str, Any]]) -> float:
    """The share of (heavy, light) pairs whose held-out p(heavy) puts the heavy one higher
    (ties count half): the ROC AUC, a figure no threshold moves, to compare models by."""
    light = sorted(float(e["p"]) for e in entries if not e["heavy"])
    heavy = [float(e["p"]) for e in entries if e["heavy"]]
    if not light or not heavy:
        return float("nan")
    above = sum(
        bisect.bisect_left(light, p)
        + (bisect.bisect_right(light, p) - bisect.bisect_left(light, p)) / 2
        for p in heavy
    )
    return above / (len(light) * len(heavy))


def final(path: Path = CORPUS, test: Path = FINAL) -> None:
    """The final test: one fit on all of the corpus, then the held-aside source routed."""
    model = train(load_corpus(path))
    rows = load_corpus(test)
    entries = []
    for r, p in zip(rows, predict(model, rows), strict=True):
        entry: dict[str, Any] = {"heavy": r.heavy, "unclear": r.unclear}
        entry.update({mode: float(p >= model.thresholds[mode]) for mode in MODES})
        entries.append(entry)
    report: dict[str, Any] = {
        "final_test": {"rows": len(rows), "file": str(test.relative_to(test.parent.parent))},
        "sources": sorted({r.source for r in rows}),
        "thresholds": {m: round(t, 4) for m, t in model.thresholds.items()},
    }
    for mode in MODES:
        report[mode] = {
            "all": rates(entries, mode),
            "clear_labels_only": rates([e for e in entries if not e["unclear"]], mode),
        }
    json.dump(report, sys.stdout, indent=2)
    print()


# The targets for balanced mode; cost and quality state their heavy aim only.
LIGHT_TARGET = {"balanced": 0.70}


def targets(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per mode, the aims and whether the held-out figures reach them."""
    heavy = [e for e in entries if e["heavy"]]
    light = [e for e in entries if not e["heavy"]]
    out: dict[str, Any] = {}
    for mode in MODES:
        aim: dict[str, Any] = {"heavy_to_cloud": RECALL[mode]}
        met = sum(e[mode] for e in heavy) >= RECALL[mode] * len(heavy)
        if mode in LIGHT_TARGET:
            aim["light_to_local"] = LIGHT_TARGET[mode]
            met = met and sum(1 - e[mode] for e in light) >= LIGHT_TARGET[mode] * len(light)
        out[mode] = {**aim, "met": met}
    return out


def main(path: Path = CORPUS) -> None:
    rows = load_corpus(path)
    entries = evaluate(rows)
    sources = sorted({str(e["source"]) for e in entries})
    report: dict[str, Any] = {
        "corpus": {"rows": len(rows), "file": str(path.relative_to(path.parent.parent))},
        "method": "grouped cross-validation by source: per held-out source, the model and its"
        " thresholds come from the other sources only (thresholds from a cross-validation"
        " inside those), so no prompt is routed by a model that saw it or its source",
        "recall_targets_inside": RECALL,
        "picked_with_margin": PICK_MARGIN,
        "ranking_auc": round(ranking(entries), 3),
        "targets": targets(entries),
    }
    for mode in MODES:
        report[mode] = {
            "trade": TRADES[mode],
            "all": rates(entries, mode),
            "clear_labels_only": rates([e for e in entries if not e["unclear"]], mode),
            "by_held_out_source": {
                s: rates([e for e in entries if e["source"] == s], mode) for s in sources
            },
        }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    if sys.argv[1:] == ["--final"]:
        final()
    else:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)
