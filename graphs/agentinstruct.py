"""Glue for the agentinstruct workflow (Mitra et al. 2024): read a seed document named by the index file,
and take the refined question out of the suggester/editor exchange."""
from __future__ import annotations

import re
from typing import Any

from synthloom import Drop, node
from synthloom.errors import ConfigError, RecordError
from synthloom.graph.context import RunContext

__all__ = ["read_document", "refined_question"]

LABEL = re.compile(r"^\W*(?:(?:rewritten|refined|new|revised|edited|final)\s+)?question(?:\s*\d+)?\s*\**\s*:\W*?(?=\w)",
                   re.IGNORECASE)
"""A label a model puts before its rewrite ("Rewritten question:", "**Question:**", "Revised question 2:")."""


@node(writes=["document", "title"])
def read_document(path: str, ctx: RunContext) -> dict[str, Any] | Drop:
    """The document's text (the seed row holds only its path, relative to the graph file) and its title line.
    The path is read through the one reader, as a sampler `file:` is: beside the graph or in an allowed folder."""
    try:
        _, text = ctx.read_file(path, key="path", what="document ")
    except ConfigError as error:  # the path comes from a record: that record fails, the run goes on
        raise RecordError(error.message) from None
    text = text.strip()
    if not text:
        return Drop("empty document")
    return {"document": text, "title": text.splitlines()[0].strip()}


@node(writes=["refined_question", "rounds"])
def refined_question(refinement_transcript: list[dict[str, str]]) -> dict[str, Any] | Drop:
    """The editor's last rewrite, and how many suggestion -> rewrite rounds were completed. The opening
    (the editor presenting the seed question) is not a rewrite; a record whose editor never rewrote is
    dropped."""
    rewrites = [turn["content"] for turn in refinement_transcript[1:] if turn["speaker"] == "editor"]
    question = LABEL.sub("", rewrites[-1]).strip().strip('"').strip() if rewrites else ""
    if not question:
        return Drop("no refined question")
    return {"refined_question": question, "rounds": len(rewrites)}
