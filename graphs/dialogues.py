"""Glue for the dialogues workflow (DiaSynth, Suresh et al. 2024): pick one subtopic per record, write each
speaker's brief from the persona pair and the decided checklist, and turn the exchange into a labelled
transcript and a multi-turn chat."""
from __future__ import annotations

import random
import re
from typing import Any

from synthloom import Drop, node

FILLERS = {"none": "Speak cleanly, without fillers or slang.",
           "a few": "Use a few fillers or pauses (um, well, you know).",
           "many": "Speak loosely, with fillers, pauses and some slang."}
STANCE = {"agree": "You mostly agree with the other person.",
          "partly agree": "You agree on some points and push back on others.",
          "disagree": "You disagree with the other person and say why."}
LABELS = {"speaker_a": "A", "speaker_b": "B"}
SENTENCE_END = re.compile(r"[.!?][\"')]*(?=\s)")


@node(writes=["subtopic"])
def pick_subtopic(id: str, topic: str, subtopics: list[str]) -> dict[str, Any] | Drop:
    """One of the generated subtopics, drawn in code, seeded by the record id (DiaSynth fans out over all of
    them; a record here takes one, so the mix over a run still covers them). A subtopic that only repeats
    the topic, or an earlier subtopic, is not a choice."""
    choices: list[str] = []
    for text in subtopics:
        phrase = text.strip(" ,.") if isinstance(text, str) else ""
        if phrase and phrase.lower() != topic.strip().lower() and phrase.lower() not in map(str.lower, choices):
            choices.append(phrase)
    if not choices:
        return Drop("no new subtopic")
    return {"subtopic": random.Random(f"subtopic:{id}").choice(choices)}


def seat(me: str, other: str, feeling: str, subtopic: str, plan: dict[str, Any]) -> str:
    """One speaker's system prompt: who they are, who they talk to, and the checklist as instructions."""
    place = "" if plan["location"] == "online" else f" {plan['location']}"
    return (f"You are {me}. You are talking with {other}; you are {plan['familiarity']}. "
            f"The conversation is {plan['medium']}{place}, about {subtopic}, in particular {plan['focus']}. "
            f"You feel {feeling}. Keep a {plan['formality']} tone. {FILLERS[plan['fillers']]} "
            f"{STANCE[plan['agreement']]} Never say your name or role. "
            f"Reply with only your next line: one or two short sentences.")


@node(writes=["system_a", "system_b"])
def seat_prompts(speaker_a: str, speaker_b: str, subtopic: str, plan: dict[str, Any]) -> dict[str, str]:
    """Both speakers' briefs from the persona pair and the checklist decided by `plan`."""
    return {"system_a": seat(speaker_a, speaker_b, plan["emotion_a"], subtopic, plan),
            "system_b": seat(speaker_b, speaker_a, plan["emotion_b"], subtopic, plan)}


def whole_sentences(text: str) -> str:
    """The text up to its last sentence end, when it stops mid-sentence and has an earlier one."""
    text = text.strip()
    if text.rstrip("\"')")[-1:] in (".", "!", "?", ""):
        return text
    ends = [match.end() for match in SENTENCE_END.finditer(text)]
    return text[:ends[-1]] if ends else text


@node(writes=["dialogue_text", "chat", "turns"])
def tidy_dialogue(talk_transcript: list[dict[str, str]], system_b: str) -> dict[str, Any]:
    """The dialogue as labelled text ("A: ...", for the summary and the judge) and as a chat for SFT: speaker
    B's brief as the system message, A as user, B as assistant, cut so it ends on B's turn. A line cut off
    by max_tokens loses its unfinished last sentence."""
    turns = [{**turn, "content": whole_sentences(turn["content"])} for turn in talk_transcript]
    lines = [f"{LABELS[turn['speaker']]}: {turn['content']}" for turn in turns]
    chat = [{"role": "user" if turn["speaker"] == "speaker_a" else "assistant", "content": turn["content"]}
            for turn in turns]
    while chat and chat[-1]["role"] != "assistant":
        chat.pop()
    return {"dialogue_text": "\n".join(lines), "chat": [{"role": "system", "content": system_b}, *chat],
            "turns": len(talk_transcript)}
