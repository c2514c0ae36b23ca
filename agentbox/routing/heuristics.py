"""How heavy a task looks, from the task alone: a score from 0 (light) to 1 (heavy) and why."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agentbox.vocabulary import TaskSpec

# Word stems that ask for reasoning the small local model does badly, and ones that ask for
# the short, mechanical work it does well. Tune them here; README lists them.
HEAVY = (
    "analy",
    "reason",
    "prove",
    "proof",
    "plan ",
    "design",
    "architect",
    "debug",
    "code",
    "program",
    "refactor",
    "step by step",
    "explain why",
    "compare",
    "evaluate",
    "strategy",
    "essay",
    "research",
    "diagnos",
    "derive",
    "optimi",
    "critique",
    "negotiat",
    "legal",
)
LIGHT = (
    "classify",
    "extract",
    "sentiment",
    "yes or no",
    "true or false",
    "label",
    "tag ",
    "translate",
    "one word",
    "keyword",
    "spell",
    "format",
    "convert",
    "rewrite",
    "say hello",
    "greet",
    "capital of",
    "summarize in one",
    "short",
)
THRESHOLDS = {"cost": 0.7, "balanced": 0.5, "quality": 0.3}
HEAVY_MODEL_AT = 0.8


@dataclass
class Assessment:
    score: float
    reasons: list[str] = field(default_factory=list)

    def add(self, delta: float, reason: str) -> None:
        self.score += delta
        self.reasons.append(reason)


def _hits(text: str, stems: tuple[str, ...]) -> list[str]:
    return [s.strip() for s in stems if s in text]


def assess(spec: TaskSpec) -> Assessment:
    text = spec.text().lower()
    a = Assessment(0.3)
    tokens = len(text) // 4
    if tokens > 1500:
        a.add(0.4, f"long input (~{tokens} tokens)")
    elif tokens > 400:
        a.add(0.15, f"medium input (~{tokens} tokens)")
    if spec.max_tokens > 1024:
        a.add(0.25, f"long answer allowed ({spec.max_tokens} tokens)")
    elif spec.max_tokens <= 64:
        a.add(-0.15, "short answer")
    if spec.json_schema is not None:
        a.add(-0.15, "structured output")
    if spec.tools or spec.kind == "agent":
        a.add(0.5, "uses tools")
    heavy = _hits(text, HEAVY)
    if heavy:
        a.add(min(0.2 * len(heavy), 0.4), f"asks to {'/'.join(heavy[:3])}")
    light = _hits(text, LIGHT)
    if light:
        a.add(-min(0.15 * len(light), 0.3), f"{'/'.join(light[:3])} task")
    if len(re.findall(r"\?", text)) > 3:
        a.add(0.1, "several questions")
    if spec.messages is not None and len(spec.messages) > 6:
        a.add(0.1, "long conversation")
    a.score = round(min(max(a.score, 0.0), 1.0), 2)
    if not a.reasons:
        a.reasons.append("plain request")
    return a
