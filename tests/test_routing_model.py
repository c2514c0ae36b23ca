"""The learned router: its shipped model file, its features, and cross-validation that never
scores a prompt with a model that saw it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from agentbox.routing import phrases, training
from agentbox.routing.features import (
    FIRST_BLOCK,
    LAST_BLOCK,
    LAST_LINE,
    Features,
    featurize,
    split,
    stable_hash,
)
from agentbox.routing.learned import MAX_OFFSET, MAX_WEIGHT, BoxLearning
from agentbox.routing.model import MODEL_FILE, LinearModel, ModelError, shipped, sigmoid
from agentbox.routing.router import Router
from agentbox.routing.training import Row, evaluate, held_out, load_corpus
from agentbox.settings import Settings
from agentbox.vocabulary import TaskSpec

CLOUDY = Settings(providers={"c": {"kind": "openai", "model": "m"}})  # type: ignore[dict-item]


def test_the_router_loads_its_model_file_and_decides_the_same_twice() -> None:
    data = json.loads(MODEL_FILE.read_text())
    from_file = LinearModel.from_json(data)
    assert from_file.info["rows"] >= 600 and len(from_file.info["sources"]) >= 3
    spec = TaskSpec(prompt="Design a billing system for 40 shops and write its SQL schema.")
    router = Router(CLOUDY)
    assert router.model is shipped()
    first, second = router.decide(spec), router.decide(spec)
    assert first == second and first.score is not None and first.features
    # the score is the file's model, not something computed elsewhere
    z = from_file.logit(featurize(spec.text()))
    assert first.score == round(1 / (1 + pow(2.718281828459045, -z)), 3)
    # the reason names the features that weighed most
    assert first.features[0].split(" ")[0].strip("'") in first.route.reason


def test_a_model_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="another kind"):
        LinearModel.from_json({"kind": "knn", "width": 3})


def test_hashing_is_the_same_in_every_process() -> None:
    """A salted str hash would give each process its own buckets and a useless model."""
    assert stable_hash("w:hello") == 1163  # crc32("w:hello") % 8192
    assert featurize("Say hello.").values == featurize("Say hello.").values


class Lookup(LinearModel):
    """Scores the rows it was trained on at +-20 (p ~ 1 or 0), anything else at 0 (p = 0.5):
    any prediction other than 0.5 is a row the model saw."""

    def __init__(self, rows: Sequence[Row]) -> None:
        super().__init__([], 0.0)
        self.seen = {frozenset(r.features.values.items()): r.heavy for r in rows}

    def logit(self, f: Features, delta: dict[int, float] | None = None) -> float:
        heavy = self.seen.get(frozenset(f.values.items()))
        return 0.0 if heavy is None else (20.0 if heavy else -20.0)


def test_cross_validation_never_scores_a_row_with_a_model_that_saw_it() -> None:
    rows = [
        Row(f"{topic} question number {i} from {source}", i % 2 == 0, source)
        for source, topic in (("alpha", "gardening"), ("beta", "plumbing"), ("gamma", "taxes"))
        for i in range(6)
    ]
    fits: list[set[str]] = []

    def fitter(train: Sequence[Row]) -> LinearModel:
        fits.append({r.source for r in train})
        return Lookup(train)

    assert held_out(rows, fitter) == [0.5] * len(rows)
    fits.clear()
    entries = evaluate(rows, fitter)
    assert len(entries) == len(rows) and all(e["p"] == 0.5 for e in entries)
    # every fit left at least one source out; the outer ones (2 sources) and the inner (1)
    assert all(len(f) < 3 for f in fits) and {len(f) for f in fits} == {1, 2}
    # and the lookup model itself would have given a seen row away
    assert training.predict(Lookup(rows), rows[:1]) != [0.5]


def test_learning_is_bounded_and_a_pinned_local_tier_moves_its_kind_local() -> None:
    learning = BoxLearning(shipped())
    router = Router(CLOUDY, learning=learning)
    heavy = "Write a detailed essay about the {} of the printing press."
    assert router.decide(TaskSpec(prompt=heavy.format("history"))).route.tier == "cloud"
    for topic in ("origins", "effects", "economics", "politics", "religion", "science") * 5:
        router.learn_pin(TaskSpec(prompt=heavy.format(topic), tier="local"), background=False)
    assert router.decide(TaskSpec(prompt=heavy.format("history"))).route.tier == "local"
    state = learning.state
    assert state.counts["pinned_local"] == 30 and 0 < state.offset <= MAX_OFFSET
    assert all(abs(d) <= MAX_WEIGHT for d in state.delta.values())
    # a schedule's pinned tier is not a user's label for a prompt each time it runs
    router.learn_pin(TaskSpec(prompt="hi", tier="cloud"), background=True)
    assert state.counts["pinned_cloud"] == 0


NOTE = "Summarize this note in one line: {}."
CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "prompts.jsonl"


def test_escalations_of_one_kind_leave_other_kinds_where_they_were() -> None:
    """The box's corrections are on the words and word pairs that make a kind of prompt, not
    on those every prompt has ("the", "."): the team's other light prompts do not move."""
    model = shipped()
    assert model.common and len(model.common) < 200
    learning = BoxLearning(model)
    probe = featurize(NOTE.format("the window in flat 9 rattles in the wind"))
    others = [r for r in load_corpus(CORPUS) if r.source == "agentbox-team" and not r.heavy]
    before = [model.logit(r.features) for r in others]
    things = (
        "the boiler knocks at night",
        "the lift stops",
        "the tap drips all day",
        "room 12 does not lock",
        "the hall smells of gas",
    )
    for thing in things:
        learning.observe(featurize(NOTE.format(thing)), True, "escalated", "balanced")
    assert sigmoid(model.logit(probe, learning.state.delta)) >= learning.threshold("balanced")
    shifts = sorted(
        model.logit(r.features, learning.state.delta) - z
        for r, z in zip(others, before, strict=True)
    )
    assert shifts[len(shifts) // 2] < 0.25, shifts
    threshold = learning.threshold("balanced")
    moved = [
        r.text
        for r, z in zip(others, before, strict=True)
        if sigmoid(z) < model.thresholds["balanced"]
        and sigmoid(model.logit(r.features, learning.state.delta)) >= threshold
    ]
    assert len(moved) <= 1, moved


def tokens(text: str) -> list[str]:
    return text.split()


def test_every_word_of_the_phrase_tables_is_counted() -> None:
    """Each table entry's words, not only its multi-word phrases, count for their kind."""
    assert phrases.count(tokens("solve the equation"))[0][phrases.MATH] == 2
    assert phrases.count(tokens("please summarize concisely"))[0][phrases.SHORT] == 1
    found, made = phrases.count(tokens("write an essay in depth"))
    assert made == 1 and found[phrases.LONG] == 1


def test_an_asked_size_is_short_or_long_by_its_number() -> None:
    def sizes(text: str) -> tuple[int, int]:
        found = phrases.count(tokens(text))[0]
        return found[phrases.SHORT], found[phrases.LONG]

    assert sizes("reply in under 15 words") == (1, 0)
    assert sizes("a two sentence description") == (1, 0)
    assert sizes("an essay of 2000 words") == (0, 1)
    assert sizes("a report of 5 pages") == (0, 1)
    assert sizes("there are 3 shops") == (0, 0)
    # the same in the other languages an owner is likely to write in
    assert sizes("einen bericht von 2000 wörtern") == (0, 1)
    assert sizes("un résumé en 2 phrases") == (1, 0)
    assert sizes("un informe de 10 páginas") == (0, 1)
    # words of any script are whole tokens ("wörtern", not "w", "ö", "rtern")
    asked = featurize("Schreibe einen Bericht von 2000 Wörtern über die Dampfmaschine.")
    assert "long output asked" in asked.names.values() and "wörtern" in asked.words


PASSAGES = (
    "The board met on Tuesday. They approved the new budget and postponed the hiring plan.",
    "Kernel panic: not syncing: VFS: unable to mount root fs on unknown-block(0,0) at boot.",
)


@pytest.mark.parametrize(
    "template",
    [
        'Summarize in one sentence: "{}"',
        "Summarize this text:\n{}",
        "Classify the text below as urgent or routine.\n\n{}\n\nAnswer with one word.",
        "Context: {}\nQuestion: Is it urgent?\nAnswer only with 'True' or 'False'.",
        "Label the log line as urgent or routine.\nLog: {}\nLabel:",
    ],
)
def test_the_instruction_is_seen_apart_from_the_text_it_carries(template: str) -> None:
    """The n-grams are the instruction's: two prompts that ask the same of different texts
    look the same but for the passage's length."""
    first, second = (featurize(template.format(p)) for p in PASSAGES)
    assert first.grams and first.grams == second.grams
    instruction, passage = split(template.format(PASSAGES[0]))
    assert "board" not in instruction and template.split(maxsplit=1)[0].rstrip(":") in instruction
    assert passage >= len(PASSAGES[0])
    assert "passage length" in first.names.values()


def test_quoted_data_is_passage_and_quoted_labels_are_instruction() -> None:
    instruction, passage = split('Triage as "urgent" or "routine": "Disk full on /var"')
    assert "urgent" in instruction and "routine" in instruction
    assert "Disk" not in instruction and passage >= len("Disk full on /var")


def test_a_long_block_counts_as_instruction_only_up_to_its_bound() -> None:
    instruction, passage = split("Write " + "very " * 2000 + "long.\n\nThen stop.")
    assert len(instruction) <= FIRST_BLOCK + LAST_BLOCK + 4 and passage > 9000


def test_a_request_appended_to_a_long_passage_is_instruction() -> None:
    """A last paragraph that ends a pasted document with the request: its last sentences, up
    to LAST_LINE, are instruction, the rest of the document is passage."""
    document = "Quarterly figures were stable across all regions of the company. " * 12
    text = f"Acme annual review\n\n{document}Please write a 900-word press release from it."
    instruction, passage = split(text)
    assert "press release" in instruction
    assert len(instruction) <= len("Acme annual review\n\n") + LAST_LINE
    assert passage >= len(document) - LAST_LINE


def test_a_labeled_text_ends_where_the_scan_cuts_a_long_prompt() -> None:
    """Past the cut of a long prompt's middle, a labeled text does not run on into the ask."""
    context = "The pump in hall 4 was serviced and restarted by the night shift. " * 40
    ask = "Answer only with 'yes' or 'no' and say nothing else, " * 8 + "not even a word."
    instruction, _ = split(f"Context: {context}\nQuestion: Was the pump restarted?\n{ask}")
    assert "nothing else" in instruction and "serviced" not in instruction


def test_a_long_last_block_that_asks_nothing_is_passage() -> None:
    """After a first block that asks, a long last block that asks nothing (no question, no
    verb of asking, no "you") is the text worked on, not a question."""
    findings = "The trial enrolled 120 adults aged 40 to 65 in four clinics. " * 6
    text = f"Extract the sentences that define the population.\n\nTrial 7\n\n{findings}"
    instruction, passage = split(text)
    assert "population" in instruction and "clinics" not in instruction
    assert passage >= len(findings)


def test_the_end_of_one_long_last_sentence_is_instruction() -> None:
    """A last paragraph of one sentence longer than LAST_LINE: its end still counts."""
    facts = ", ".join(f"the {n}th plant extract soothes the skin" for n in range(4, 16))
    text = f"Product notes\n\nIngredients: {facts}, so help me write a 300-word review of it"
    instruction, _ = split(text)
    assert "write a 300-word review" in instruction
    assert len(instruction) <= len("Product notes\n\n") + LAST_LINE
