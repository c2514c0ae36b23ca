"""Where `auto` sends 30 sample prompts in each mode: `./scripts/route-report` prints JSON."""

from __future__ import annotations

import json
from collections import Counter

from agentbox.config import ProviderConfig, Settings
from agentbox.routing.router import Router
from agentbox.vocabulary import TaskSpec

LIGHT = [
    "Say hello in five words.",
    "Classify the sentiment of: 'the battery died after a day'.",
    "Extract the date from: 'meet me on March 3rd at noon'.",
    "Translate 'good morning' to French.",
    "What is the capital of Italy?",
    "Answer yes or no: is 17 a prime number?",
    "Label this ticket as bug, question or feature: 'app crashes on start'.",
    "Convert 5 miles to kilometres.",
    "Rewrite in a friendlier tone: 'send the report now'.",
    "Give one word for a very large wave.",
    "Tag this photo caption with keywords: 'sunset over the harbour'.",
    "Format this phone number: 5551234567.",
    "Spell-check: 'recieve the pakage tomorow'.",
    "Summarize in one sentence: the meeting moved to Friday.",
    "Is this email spam? 'You won a free cruise, click here'.",
]
HEAVY = [
    "Analyze the trade-offs between SQLite and Postgres for an edge device, step by step.",
    "Design a migration plan for our billing system and evaluate the risks.",
    "Write code for a token bucket rate limiter in Rust and explain why it is correct.",
    "Prove that the square root of two is irrational.",
    "Compare three strategies for caching LLM responses and recommend one.",
    "Debug this: my asyncio service deadlocks under load when the DB is slow. What could cause it?",
    "Plan a two-week itinerary for Japan with a budget, and explain the reasoning.",
    "Critique this business strategy: selling AI boxes to farmers. What are the weaknesses?",
    "Derive the closed form of the Fibonacci sequence.",
    "Research and summarize the arguments for and against four-day work weeks, then evaluate them.",
    "Refactor this 300-line Python module into smaller parts; describe the architecture.",
    "Explain why the sky is blue, step by step, with the physics involved.",
    "Negotiate a rent reduction: draft the arguments and a fallback position.",
    "Optimize a SQL query that joins five tables and runs in 30 s; reason about indexes.",
    "Write an essay on the history of the printing press and its effects on science.",
]


def main() -> None:
    settings = Settings(
        providers={
            "cloud": ProviderConfig(kind="openai", model="gpt-4o-mini", heavy_model="gpt-4o")
        }
    )
    report: dict[str, object] = {}
    for mode in ("cost", "balanced", "quality"):
        router = Router(
            settings.model_copy(
                update={"routing": settings.routing.model_copy(update={"mode": mode})}
            )
        )
        rows = []
        for kind, prompts in (("light", LIGHT), ("heavy", HEAVY)):
            for prompt in prompts:
                d = router.decide(TaskSpec(prompt=prompt))
                rows.append(
                    {
                        "expected": kind,
                        "tier": d.route.tier,
                        "model": d.route.model,
                        "score": d.score,
                        "prompt": prompt,
                        "reason": d.route.reason,
                    }
                )
        right = sum((r["expected"] == "heavy") == (r["tier"] == "cloud") for r in rows)
        report[mode] = {
            "agree_with_label": f"{right}/{len(rows)}",
            "tiers": dict(Counter(f"{r['expected']}->{r['tier']}" for r in rows)),
            "decisions": rows if mode == "balanced" else None,
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
