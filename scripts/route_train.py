"""Trains the router's model on corpus/prompts.jsonl and writes agentbox/routing/model.json,
the file that ships in the package: `./scripts/route-train` (offline, about a minute)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from agentbox.routing.model import MODEL_FILE
from agentbox.routing.training import PICK_MARGIN, RECALL, load_corpus, train

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "prompts.jsonl"


def main() -> None:
    rows = load_corpus(CORPUS)
    model = train(rows)
    model.info = {
        "corpus_sha256": hashlib.sha256(CORPUS.read_bytes()).hexdigest(),
        "rows": len(rows),
        "sources": dict(sorted(Counter(r.source for r in rows).items())),
        "recall_targets": RECALL,
        "picked_with_margin": PICK_MARGIN,
    }
    MODEL_FILE.write_text(json.dumps(model.to_json(), separators=(",", ":")) + "\n")
    print(
        json.dumps(
            {
                "file": str(MODEL_FILE),
                "bytes": MODEL_FILE.stat().st_size,
                "thresholds": model.thresholds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
