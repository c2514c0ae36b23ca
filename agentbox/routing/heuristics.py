"""The routing rules written by hand: the domain words the model's features count, and fixed
shifts for what a task says beyond its text (answer size, schema, tools)."""

from __future__ import annotations

from agentbox.vocabulary import TaskSpec

# Word stems that ask for reasoning the small local model does badly, and ones that ask for
# the short, mechanical work it does well: two of the model's named features count them.
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


def adjustments(spec: TaskSpec) -> list[tuple[float, str]]:
    """Fixed shifts of the model's logit for what a task says beyond its text (the corpus has
    none of these, so the model cannot learn them): (shift, why)."""
    out = []
    if spec.max_tokens > 1024:
        out.append((1.5, f"long answer allowed ({spec.max_tokens} tokens)"))
    elif spec.max_tokens <= 64:
        out.append((-1.0, "short answer"))
    if spec.json_schema is not None:
        out.append((-0.5, "structured output"))  # checked against its schema, then escalated
    if spec.tools or spec.kind == "agent":
        out.append((2.0, "uses tools"))
    if spec.messages is not None and len(spec.messages) > 6:
        out.append((0.5, "long conversation"))
    return out
