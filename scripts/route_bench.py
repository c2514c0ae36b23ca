"""How long `auto` routing takes to decide, offline, on one core: every corpus prompt through
Router.decide, timed one by one, against the 1 ms bound and, in the same run, a box whose own
corrections make each decision read word pairs too. `./scripts/route-bench` prints JSON
(microseconds)."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from agentbox.routing.features import featurize
from agentbox.routing.learned import BoxLearning
from agentbox.routing.model import shipped
from agentbox.routing.router import Router
from agentbox.routing.training import load_corpus
from agentbox.settings import ProviderConfig, Settings
from agentbox.vocabulary import TaskSpec

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "prompts.jsonl"
ROUNDS = 5
BOUND_US = 1000.0  # p99 of one decision on one core (docs: README, Routing)
# Corrections as a box gets them: escalations of one kind of note
ESCALATED = [
    f"Summarize this note in one line: the {x} is broken." for x in ("lift", "tap", "door")
]
CLOCKS = ("cpu", "wall")


def timings(router: Router, specs: list[TaskSpec], clock: str) -> list[float]:
    """Per decision: wall time, or the CPU time of this thread ("cpu": what a decision costs
    when other processes share the core, as on this machine)."""
    now = time.perf_counter_ns if clock == "wall" else time.thread_time_ns
    out = []
    for spec in specs:
        t = now()
        router.decide(spec)
        out.append((now() - t) / 1e3)
    return out


def figures(us: list[float]) -> dict[str, float]:
    q = statistics.quantiles(us, n=100)
    return {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": round(max(us), 1)}


def main() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    settings = Settings(providers={"c": ProviderConfig(kind="openai", model="m")})
    t = time.perf_counter()
    router = Router(settings)  # loads the model file
    load_ms = (time.perf_counter() - t) * 1e3
    specs = [TaskSpec(prompt=r.text).with_id() for r in load_corpus(CORPUS)]
    cold = timings(router, specs, "cpu")  # the first sight of a word fills the n-gram cache
    warm = {c: [x for _ in range(ROUNDS) for x in timings(router, specs, c)] for c in CLOCKS}
    learning = BoxLearning(shipped())
    for text in ESCALATED:
        learning.observe(featurize(text), True, "escalated", "balanced")
    learned = Router(settings, learning=learning)
    timings(learned, specs, "cpu")
    corrected = [x for _ in range(ROUNDS) for x in timings(learned, specs, "cpu")]
    longest = max(specs, key=lambda s: len(s.text()))
    report = {
        "decisions": len(warm["cpu"]),
        "prompt_chars": {
            "median": statistics.median(len(s.text()) for s in specs),
            "max": len(longest.text()),
        },
        "model_load_ms": round(load_ms, 1),
        "first_pass_cpu_us": figures(cold),
        **{f"steady_{c}_us": figures(warm[c]) for c in CLOCKS},
        "with_corrections_cpu_us": figures(corrected),
        "bound_us": {"p99": BOUND_US, "met": figures(warm["cpu"])["p99"] < BOUND_US},
        "longest_prompt_cpu_us": figures(timings(router, [longest] * 200, "cpu")),
        "cpu": os.uname().machine,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
