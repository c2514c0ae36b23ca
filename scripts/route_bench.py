"""How long `auto` routing takes to decide, offline, on one core: every corpus prompt through
Router.decide, timed one by one. `./scripts/route-bench` prints JSON (microseconds)."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from agentbox.routing.router import Router
from agentbox.routing.training import load_corpus
from agentbox.settings import ProviderConfig, Settings
from agentbox.vocabulary import TaskSpec

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "prompts.jsonl"
ROUNDS = 5
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
        "longest_prompt_cpu_us": figures(timings(router, [longest] * 200, "cpu")),
        "cpu": os.uname().machine,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
