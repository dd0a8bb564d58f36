"""Glue for the self_instruct workflow (Wang et al. 2023): tidy the model's new instruction and measure
what the instruction filters decide on (length in words, a word naming something a text-only model cannot
see, hear or produce); tidy a generated input ("none" means the task needs no input)."""
from __future__ import annotations

import re
from typing import Any

from synthloom import node

# Things a text-only model cannot take in or give back (Self-Instruct's keyword filter, our own list).
UNSUPPORTED_WORDS = ["image", "images", "picture", "pictures", "photo", "photos", "graph", "graphs", "file",
                     "files", "map", "maps", "draw", "drawing", "plot", "go to", "video", "videos", "audio",
                     "music", "flowchart", "diagram", "screenshot"]
NO_INPUT = {"", "none", "no input", "n/a", "na", "empty", "null", "nothing", "not needed", "no input needed"}
LABEL = re.compile(r"^\s*(?:\d+\s*[.):]|task\s*\d*\s*[.:]|new task\s*[.:]|instruction\s*[.:]|input\s*[.:])\s*",
                   re.IGNORECASE)
INPUT_LABEL = re.compile(r"^\s*input\s*:\s*", re.IGNORECASE)
QUOTES = "\"'“”‘’`*"


def first_line(text: str) -> str:
    """The first non-empty line, without a leading number or label ("9.", "Task:") and wrapping quotes."""
    for line in text.strip().splitlines():
        line = LABEL.sub("", line.strip()).strip().strip(QUOTES).strip()
        if line:
            return line
    return ""


def unsupported_word(text: str, words: list[str]) -> str:
    """The first of `words` found in the text as a whole word or phrase (case-insensitive), else ""."""
    lowered = text.lower()
    for word in words:
        if re.search(rf"\b{re.escape(word.lower())}\b", lowered):
            return word
    return ""


@node(writes=["instruction", "checks"])
def tidy_instruction(draft: str, *, unsupported_words: list[str] | None = None) -> dict[str, Any]:
    """Keep the first line of the draft as the instruction; count its words, find an unsupported word."""
    instruction = first_line(draft)
    words = unsupported_words if unsupported_words is not None else UNSUPPORTED_WORDS
    return {"instruction": instruction,
            "checks": {"words": len(instruction.split()), "unsupported_word": unsupported_word(instruction, words)}}


@node(writes=["input"])
def tidy_input(input: str) -> dict[str, Any]:
    """The generated input, stripped; "" when the model says the task needs none."""
    text = INPUT_LABEL.sub("", input.strip()).strip()
    if text.lower().strip(" .!") in NO_INPUT:
        text = ""
    return {"input": text}
