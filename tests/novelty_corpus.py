"""Instruction-like sentences with planted near-duplicates, for checking and timing `novelty`.

Each sentence is an instruction opener followed by 4-28 words: function words at their usual rate and
content words drawn Zipf-like from 8,000 made-up words, so pooled texts share common words the way real
instructions do. A share of the texts are copies of an earlier one with 0 to half its length in word
edits (substitutions, deletions, insertions), which spreads their ROUGE-L to the original from 1.0 down
through the 0.7 threshold to unrelated.
"""
from __future__ import annotations

import itertools
import random

OPENERS = ["Write a short", "Write a", "Explain why", "Explain how", "Give me a list of", "List three",
           "Classify the following", "Summarize the", "Describe the", "Translate the following", "Suggest a",
           "Create a", "Compare the", "What is the", "How do I", "Generate a", "Rewrite the", "Tell me about",
           "Find the", "Draft a"]
FUNCTION_WORDS = "the a of and to in is for that with on as by it this be are from or at an".split()
SYLLABLES = ["ba", "ko", "ri", "men", "tal", "so", "vi", "dor", "pe", "lun", "gra", "ti", "mo", "sen", "fa",
             "ul", "ne", "zor", "ka", "bel"]


def _vocabulary(size: int) -> list[str]:
    rng = random.Random(12345)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))))
    return sorted(words)


CONTENT_WORDS = _vocabulary(8000)
CONTENT_CUMULATIVE = list(itertools.accumulate(1 / (rank + 1) ** 1.05 for rank in range(len(CONTENT_WORDS))))
FUNCTION_CUMULATIVE = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(FUNCTION_WORDS))))


def content_word(rng: random.Random) -> str:
    return rng.choices(CONTENT_WORDS, cum_weights=CONTENT_CUMULATIVE)[0]


def sentence(rng: random.Random, longest: int = 28) -> str:
    words = [rng.choices(FUNCTION_WORDS, cum_weights=FUNCTION_CUMULATIVE)[0] if rng.random() < 0.35
             else content_word(rng) for _ in range(rng.randint(4, longest))]
    return rng.choice(OPENERS) + " " + " ".join(words) + "."


def near_copy(text: str, rng: random.Random) -> str:
    words = text.rstrip(".").split()
    for _ in range(rng.randint(0, max(1, len(words) // 2))):
        operation, position = rng.random(), rng.randrange(len(words))
        if operation < 0.5:
            words[position] = content_word(rng)
        elif operation < 0.75 and len(words) > 3:
            del words[position]
        else:
            words.insert(position, rng.choice(FUNCTION_WORDS))
    return " ".join(words) + "."


def corpus(size: int, seed: int = 0, planted: float = 0.3, longest: int = 28) -> list[str]:
    """`size` texts, a share `planted` of them near-copies of an earlier one."""
    rng = random.Random(seed)
    texts: list[str] = []
    for _ in range(size):
        planting = texts and rng.random() < planted
        texts.append(near_copy(rng.choice(texts), rng) if planting else sentence(rng, longest))
    return texts
