"""The router's trained model: a logistic regression over `features`, loaded from the JSON file
that ships in the package (model.json, written by scripts/route-train)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from agentbox.routing.features import BUCKETS, WIDTH, Features

MODEL_FILE = Path(__file__).with_name("model.json")
MODES = ("cost", "balanced", "quality")


class ModelError(Exception):
    """The model file is missing or not one this version reads."""


@dataclass
class LinearModel:
    """p(heavy) = sigmoid(bias + w . x); thresholds on p per routing mode."""

    weights: list[float]
    bias: float
    thresholds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODES, 0.5))
    heavy_model_at: float = 0.9
    info: dict[str, Any] = field(default_factory=dict)
    # word and word-pair slots of many training prompts ("the", ".", "of the"): they tell no
    # kind of prompt from another, so the box's own corrections leave them alone (learned.py)
    common: frozenset[int] = frozenset()

    def logit(self, f: Features, delta: dict[int, float] | None = None) -> float:
        w = self.weights
        z = self.bias + sum(w[i] * v for i, v in f.values.items())
        if delta:
            z += sum(delta.get(i, 0.0) * v for i, v in f.values.items())
            z += f.pair_scale * sum(delta.get(i, 0.0) for i in f.pairs)
        return z

    def explain(
        self, f: Features, delta: dict[int, float] | None = None, top: int = 5
    ) -> tuple[float, list[str]]:
        """The logit and the features that pushed hardest, each as "'name' +0.42" (toward
        heavy) or "-" (toward light). The n-grams all have one value, so their sum and their
        ranking run in C (sum, sorted): this is the router's hot path."""
        w = self.weights
        if delta:
            w = list(w)
            for i, d in delta.items():
                w[i] += d
        weight = w.__getitem__
        named = [(w[i] * v, i) for i, v in f.values.items() if i >= BUCKETS]
        z = self.bias + f.scale * sum(map(weight, f.grams)) + sum(c for c, _ in named)
        ranked = sorted(f.grams, key=weight)
        ends = ranked[:top] + ranked[-top:] if len(ranked) > 2 * top else ranked
        parts = named + [(w[i] * f.scale, i) for i in ends]
        if delta:  # the box's corrections of word pairs, which the shipped model does not read
            learned = [(delta[i] * f.pair_scale, i) for i in f.pairs if i in delta]
            z += sum(c for c, _ in learned)
            parts += learned
        parts.sort(key=lambda p: -abs(p[0]))
        return z, [
            f"{f.names.get(i) or f.pairs[i]!r} {c:+.2f}" for c, i in parts[:top] if abs(c) >= 0.01
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "logistic-hashed-ngrams",
            "width": WIDTH,
            "bias": round(self.bias, 5),
            "thresholds": {m: round(t, 4) for m, t in self.thresholds.items()},
            "heavy_model_at": self.heavy_model_at,
            "info": self.info,
            "common": sorted(self.common),
            # sparse: most hashed slots never saw an n-gram
            "weights": {str(i): round(w, 5) for i, w in enumerate(self.weights) if round(w, 5)},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LinearModel:
        if data.get("kind") != "logistic-hashed-ngrams" or data.get("width") != WIDTH:
            raise ModelError("the routing model file is of another kind or width: retrain it")
        weights = [0.0] * WIDTH
        for i, w in data["weights"].items():
            weights[int(i)] = float(w)
        return cls(
            weights,
            float(data["bias"]),
            {m: float(data["thresholds"][m]) for m in MODES},
            float(data["heavy_model_at"]),
            dict(data.get("info") or {}),
            frozenset(int(i) for i in data.get("common") or () if 0 <= int(i) < BUCKETS),
        )


def sigmoid(z: float) -> float:
    if z < -30:
        return 0.0
    return 1 / (1 + math.exp(-z))


@cache
def shipped() -> LinearModel:
    """The model of this package, read once per process."""
    try:
        return LinearModel.from_json(json.loads(MODEL_FILE.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the routing model {MODEL_FILE}: {exc}") from None
