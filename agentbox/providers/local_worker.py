"""The local model's child process: loads llama.cpp once, answers JSON-lines requests.

Run as `python -m agentbox.providers.local_worker --model M --threads N --context C`. The daemon
talks to it over the worker's original stdout; fd 1 is pointed at stderr first so that anything
llama.cpp prints can never corrupt the protocol. A native crash kills only this process.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import os
import signal
import sys
import time
from typing import IO, Any


def _send(out: IO[str], msg: dict[str, Any]) -> None:
    out.write(json.dumps(msg, separators=(",", ":")) + "\n")
    out.flush()


class Confidence:
    """The log-probability of each sampled token, from the logits llama.cpp hands a logits
    processor (chat logprobs would need logits_all: n_ctx x vocab floats, ~800 MB here)."""

    def __init__(self) -> None:
        self.logprobs: list[float] = []
        self._last: Any = None  # log-softmax of the previous step's logits

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np  # noqa: PLC0415 (llama_cpp has loaded it already)

        if self._last is not None:  # the token sampled from the previous step is now known
            self.logprobs.append(float(self._last[input_ids[-1]]))
        top = float(scores.max())
        self._last = scores - (top + float(np.log(np.exp(scores - top).sum())))
        return scores

    def summary(self) -> dict[str, float | None]:
        lps = self.logprobs
        if not lps:
            return {"mean_logprob": None, "min_logprob": None}
        return {"mean_logprob": round(sum(lps) / len(lps), 3), "min_logprob": round(min(lps), 3)}


def _complete(llm: Any, req: dict[str, Any], out: IO[str]) -> dict[str, Any]:
    from llama_cpp import LogitsProcessorList  # noqa: PLC0415 (loaded with the model)

    confidence = Confidence()
    kwargs: dict[str, Any] = {
        "messages": req["messages"],
        "max_tokens": int(req["max_tokens"]),
        "temperature": float(req.get("temperature", 0.2)),
        "stream": True,
        "logits_processor": LogitsProcessorList([confidence]),
    }
    if req.get("schema") is not None:
        kwargs["response_format"] = {"type": "json_object", "schema": req["schema"]}
    elif req.get("json"):
        kwargs["response_format"] = {"type": "json_object"}
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    tokens = 0
    finish = "stop"
    for chunk in llm.create_chat_completion(**kwargs):
        choice = chunk["choices"][0]
        piece = choice["delta"].get("content")
        if piece:
            if first is None:
                first = time.perf_counter()
            parts.append(piece)
            tokens += 1
            if tokens == 1 or tokens % 32 == 0:  # the first piece times the first token
                _send(out, {"type": "progress", "id": req["id"], "output_tokens": tokens})
        if choice.get("finish_reason"):
            finish = choice["finish_reason"]
    ended = time.perf_counter()
    # The prompt as the template renders it, counted; else from the evaluated context, which
    # is one short when generation stopped at max_tokens (the last token is never evaluated).
    counted = _count(llm, req)["prompt_tokens"]
    input_tokens = counted if counted is not None else max(int(llm.n_tokens) - tokens, 0)
    gen_s = ended - (first or started)
    return {
        "type": "done",
        "id": req["id"],
        "text": "".join(parts),
        "input_tokens": input_tokens,
        "output_tokens": tokens,
        "finish_reason": finish,
        "tokens_per_s": round(tokens / gen_s, 2) if gen_s > 0 and tokens > 1 else None,
        "seconds": round(ended - started, 4),
        **confidence.summary(),
    }


def _count(llm: Any, req: dict[str, Any]) -> dict[str, Any]:
    """Tokens of a chat as this model's own template renders it, and of each text: what a
    server that reports no usage is counted with."""
    prompt = _render(llm, req.get("messages") or [])
    return {
        "type": "counted",
        "id": req["id"],
        "prompt": prompt,
        # the template writes its own special tokens (so no extra BOS), as llama-cpp does
        "prompt_tokens": None if prompt is None else len(_tokenize(llm, prompt, special=True)),
        "text_tokens": [len(_tokenize(llm, t, special=False)) for t in req.get("texts") or []],
    }


def _tokenize(llm: Any, text: str, special: bool) -> list[int]:
    return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)) if text else []


def _render(llm: Any, messages: list[dict[str, Any]]) -> str | None:
    """The chat through the model's GGUF chat template (None when it has none)."""
    formatter = _formatter(llm)
    if formatter is None or not messages:
        return None
    chat: Any = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    return str(formatter(messages=chat).prompt)


@functools.lru_cache(maxsize=1)
def _formatter(llm: Any) -> Any:
    """The model's chat template, compiled once (each compile costs about 10 ms)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: PLC0415

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return None

    def text(token: int) -> str:
        return (
            "" if token == -1 else llm.detokenize([token], special=True).decode("utf-8", "replace")
        )

    return Jinja2ChatFormatter(template, text(llm.token_eos()), text(llm.token_bos()))


def _die_with_parent() -> None:
    """Ask the kernel to end this worker when the daemon dies, even by kill -9."""
    pr_set_pdeathsig = 1
    # Without glibc the worker still ends, at its next write to the closed pipe.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    _die_with_parent()
    try:
        return _serve(argv)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0  # the daemon went away; nothing to report to


def _serve(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="agentbox-local-worker")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--context", type=int, default=4096)
    args = parser.parse_args(argv)

    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    _send(out, {"type": "loading", "model": args.model})
    started = time.perf_counter()
    try:
        from llama_cpp import Llama  # noqa: PLC0415  (heavy import kept out of the daemon)

        llm = Llama(
            model_path=args.model,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            n_ctx=args.context,
            verbose=False,
        )
    except Exception as exc:  # any load failure is reported, not raised: the daemon decides
        _send(out, {"type": "fatal", "message": f"cannot load model: {exc}"})
        return 1
    _send(out, {"type": "ready", "load_s": round(time.perf_counter() - started, 3)})

    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError:
            _send(out, {"type": "error", "id": None, "message": "request is not JSON"})
            continue
        try:
            _send(out, _count(llm, req) if req.get("op") == "count" else _complete(llm, req, out))
        except Exception as exc:  # one bad request must not take the model down
            _send(out, {"type": "error", "id": req.get("id"), "message": str(exc)[:500]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
