"""Training the router's model in plain Python, and cross-validation grouped by source so a
prompt is never scored by a model that saw it (scripts/route-train, scripts/route-report)."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentbox.routing.features import BUCKETS, NAMED, WIDTH, Features, featurize
from agentbox.routing.model import MODES, LinearModel, sigmoid

# The share of heavy prompts each mode aims to send to the cloud, on prompts from sources
# the model did not see. Thresholds are picked on held-out predictions to reach these plus
# PICK_MARGIN: a threshold picked on the other sources reached less on an unseen one (with no
# margin, balanced reached 94.2-94.6 % for an aim of 95 %; with a full point, 96.5-96.8 % at
# 3 points of light->local: corpus/README.md).
RECALL = {"cost": 0.85, "balanced": 0.95, "quality": 0.97}
PICK_MARGIN = 0.005
EPOCHS = 12
L2 = 1e-4
RATE = 0.5
UNCLEAR_WEIGHT = 0.5
# What the structural features mean, as a prior in logit units: training starts from these
# and is pulled back to them (PRIOR_PULL), and never flips their sign. A source missing from
# the training rows (all the code, say) then still counts with the team's judgement.
PRIOR = {
    "instruction length": 0.5,
    "passage length": 0.0,  # free: a long text to work on is not by itself hard work
    "code": 3.0,
    "math": 2.0,
    "long output asked": 2.5,
    "short output asked": -1.5,
    "reasoning asked": 2.0,
    "plain question": -1.5,
    "sub-tasks": 1.0,
    "heavy words": 2.0,
    "light words": -2.0,
    "light ask": -1.5,
    "heavy ask": 1.5,
    # free: the bins let length weigh as it does, so function words ("and", "with") need
    # not stand in for it
    "instruction under 80": 0.0,
    "instruction 80-200": 0.0,
    "instruction 200-400": 0.0,
    "instruction over 400": 0.0,
}
PRIOR_PULL = 3e-3
BIAS0 = -1.5
COMMON_SHARE = 0.1  # a word (or pair) in this share of the training prompts is `common`


@dataclass(frozen=True)
class Row:
    text: str
    heavy: bool
    source: str
    unclear: bool = False

    @property
    def features(self) -> Features:
        return _features(self.text)


def load_corpus(path: Path) -> list[Row]:
    """Rows of a corpus file (corpus/README.md describes its columns)."""
    rows = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        rows.append(Row(r["prompt"], r["label"] == "heavy", r["source"], bool(r["unclear"])))
    return rows


_CACHE: dict[str, Features] = {}


def _features(text: str) -> Features:
    f = _CACHE.get(text)
    if f is None:
        f = _CACHE[text] = featurize(text)
    return f


Fitter = Callable[[Sequence[Row]], LinearModel]


def fit(rows: Sequence[Row], epochs: int = EPOCHS) -> LinearModel:
    """Logistic regression by AdaGrad; light and heavy rows weigh the same in total."""
    # Every (source, label) group weighs the same in total: a big source does not drown the
    # others, and neither label wins by count.
    groups = Counter((r.source, r.heavy) for r in rows)
    prior = [0.0] * WIDTH
    for k, name in enumerate(NAMED):
        prior[BUCKETS + k] = PRIOR[name]
    w = list(prior)
    g2 = [1e-8] * WIDTH
    bias, b2 = BIAS0, 1e-8
    order = list(range(len(rows)))
    for epoch in range(epochs):
        random.Random(epoch).shuffle(order)  # noqa: S311 (seeded: the same model every run)
        for j in order:
            r = rows[j]
            x = r.features.values
            p = sigmoid(bias + sum(w[i] * v for i, v in x.items()))
            weight = len(rows) / (len(groups) * groups[(r.source, r.heavy)])
            if r.unclear:
                weight *= UNCLEAR_WEIGHT
            g = (p - (1.0 if r.heavy else 0.0)) * weight
            for i, v in x.items():
                # n-gram weights shrink to 0, the named ones to their prior
                pull = L2 * w[i] if i < BUCKETS else PRIOR_PULL * (w[i] - prior[i])
                gi = g * v + pull
                g2[i] += gi * gi
                w[i] -= RATE * gi / math.sqrt(g2[i])
                if i >= BUCKETS and w[i] * prior[i] < 0:
                    w[i] = 0.0  # a feature may weigh less than its prior says, never the reverse
            b2 += g * g
            bias -= RATE * g / math.sqrt(b2)
    return LinearModel(w, bias)


def predict(model: LinearModel, rows: Sequence[Row]) -> list[float]:
    return [sigmoid(model.logit(r.features)) for r in rows]


def grouped_folds(rows: Sequence[Row]) -> list[tuple[str, list[int], list[int]]]:
    """(held-out source, train indices, test indices): one fold per source."""
    sources = sorted({r.source for r in rows})
    return [
        (
            s,
            [i for i, r in enumerate(rows) if r.source != s],
            [i for i, r in enumerate(rows) if r.source == s],
        )
        for s in sources
    ]


def held_out(rows: Sequence[Row], fitter: Fitter = fit) -> list[float]:
    """p(heavy) for every row from a model trained only on the other sources."""
    out = [0.0] * len(rows)
    for _, train, test in grouped_folds(rows):
        model = fitter([rows[i] for i in train])
        for i, p in zip(test, predict(model, [rows[i] for i in test]), strict=True):
            out[i] = p
    return out


def pick_thresholds(rows: Sequence[Row], probs: Sequence[float]) -> dict[str, float]:
    """Per mode, the highest threshold that still sends RECALL[mode] + PICK_MARGIN of heavy
    rows to the cloud (a row goes to the cloud when p >= threshold)."""
    heavy = sorted((p for r, p in zip(rows, probs, strict=True) if r.heavy), reverse=True)
    out = {}
    for mode in MODES:
        if not heavy:
            out[mode] = 0.5
            continue
        k = min(max(math.ceil((RECALL[mode] + PICK_MARGIN) * len(heavy)), 1), len(heavy))
        out[mode] = max(heavy[k - 1] - 1e-6, 1e-6)
    return out


def common_words(rows: Sequence[Row]) -> frozenset[int]:
    """The word and word-pair slots of at least COMMON_SHARE of the rows."""
    seen = Counter(g for r in rows for g in (*r.features.grams, *r.features.pairs))
    return frozenset(g for g, n in seen.items() if n >= COMMON_SHARE * len(rows))


def train(rows: Sequence[Row], fitter: Fitter = fit) -> LinearModel:
    """A model on all rows, with thresholds picked on its own grouped cross-validation (so a
    threshold never comes from predictions on rows the model trained on)."""
    thresholds = pick_thresholds(rows, held_out(rows, fitter))
    model = fitter(rows)
    model.thresholds = thresholds
    model.common = common_words(rows)
    return model


def evaluate(rows: Sequence[Row], fitter: Fitter = fit) -> list[dict[str, float | str]]:
    """For each source: train (model and thresholds) on the others, score this one."""
    report: list[dict[str, float | str]] = []
    for source, train_idx, test_idx in grouped_folds(rows):
        model = train([rows[i] for i in train_idx], fitter)
        test = [rows[i] for i in test_idx]
        for r, p in zip(test, predict(model, test), strict=True):
            entry: dict[str, float | str] = {"source": source, "p": p, "heavy": float(r.heavy)}
            entry["unclear"] = float(r.unclear)
            for mode in MODES:
                entry[mode] = float(p >= model.thresholds[mode])
            report.append(entry)
    return report
