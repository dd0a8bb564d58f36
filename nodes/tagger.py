"""`tagger`: quality tags on a text field, computed locally, plus optional LLM tags in one call.

The tags are what a `filter` node (or a later reader of the data) decides on: length, lexical diversity,
Gopher-style repetition, compressibility, readability, language, refusals and truncation (methods.md
§2.1, §2.5, §2.7). Every local figure is cheap and deterministic, so it can run on every record.

Definitions, so the numbers can be checked by hand:

- `words`: words as the report counts them (`synthloom.measures.words`: runs of word characters, an
  apostrophe inside a word kept), so a record's `words` and the report's length histogram agree.
  `tokens`: a whitespace-and-punctuation tokenizer (runs of word characters, and each punctuation mark
  alone) — not a model's tokenizer. `chars`: characters.
- `sentences`: pieces ending in . ! ? or … (plus a final unterminated piece).
- `distinct_1`, `distinct_2`: unique n-grams / n-grams over the lowercased words without punctuation,
  per text (0 when the text has no n-gram).
- `duplicate_line_ratio`: share of non-empty lines that repeat an earlier line (Gopher).
- `top_2gram_char_share`: characters covered by the most frequent word 2-gram (its length times its
  count) / characters of the text (Gopher, as datatrove computes it).
- `compression_ratio`: UTF-8 bytes / gzip-compressed bytes; higher means more repetitive.
- `flesch_reading_ease`: textstat's Flesch Reading Ease (higher is easier), with English syllable rules
  whatever the language; None for empty text.
- `language`: the language among en, fr, de, es, it, pt whose common function words the text uses most
  (a stopword-overlap heuristic: cheap, offline, fine for telling these apart on a sentence or more);
  "unknown" with too little evidence or a tie.
- `refusal`: the text contains one of `refusal_markers` (case-insensitive).
- `truncated`: the text is empty, ends with : , ; or -, leaves a ``` code fence open, or its last
  character (after closing quotes and brackets) is not terminal punctuation; with `finish_reason:` also
  when the model stopped for any reason but "stop" (a reply cut by max_tokens can end on a full stop).
- `ends_with_question`: the text's last character (after closing quotes and brackets) is "?".
- `leaked_scaffolding`: the text contains one of `scaffolding_markers` (case-insensitive): prompt labels
  and JSON fragments a weak model copies from its instructions ("Feedback:", "Score:", '{"').
- `echoes` (with `echo_of:`): the other field's text, normalised (case, spacing, punctuation), makes up the
  text or is contained in it: an answer that repeats its question.
- `on_topic` (with `topic_of:`): the text shares at least one content word with one of the given fields
  (an answer with its question or topic). Content words: three letters or more, not a function word of the
  six languages above nor a common English question word or auxiliary; a plural meets its singular
  ("stars" and "star", "tides" and "tide"). A cheap guard against an answer about something else, not a
  judge of relevance.
"""
from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from synthloom.config import ceilings
from synthloom.engine.generate import generate
from synthloom.errors import RecordError
from synthloom.graph.context import RunContext
from synthloom.graph.node import Node, NodeParams
from synthloom.graph.output_schema import OutputSchema
from synthloom.measures import compression_ratio as corpus_compression_ratio
from synthloom.measures import distinct_n as corpus_distinct_n
from synthloom.measures import flesch_reading_ease, warm_up_readability
from synthloom.measures import words as corpus_words

DEFAULT_REFUSAL_MARKERS = [
    "i'm sorry", "i am sorry", "as an ai", "as a language model", "i cannot", "i can't", "i can not",
    "i'm unable to", "i am unable to", "i'm not able to", "i am not able to", "i won't be able to",
    "i apologize", "i must decline",
]
DEFAULT_SCAFFOLDING_MARKERS = [
    "feedback:", "score:", "scores:", "question:", "answer:", "improved answer:", "text to review",
    '{"', '"}', '":',
]
DIFFICULTY = ["very easy", "easy", "medium", "hard", "very hard"]

TOKEN = re.compile(r"\w+|[^\w\s]")
WORD = re.compile(r"\w+")
SENTENCE_END = re.compile(r"[.!?…]+(?=\s|$)")
TERMINAL = set(".!?…。！？")
CLOSERS = "\"'”’»)]}*_`"
DANGLING = set(":,;-–—")

# Function words frequent in one of the six languages and not in the other five ("de", "que", "la", "e"
# are left out: they would count for several languages at once).
STOPWORDS = {
    "en": {"the", "and", "of", "to", "is", "that", "it", "with", "for", "this", "are", "be", "have", "not",
           "you", "what", "which", "they", "from", "by", "at", "or", "but", "how", "would", "there", "their",
           "has", "were", "can", "we", "if", "about", "my", "your"},
    "fr": {"les", "des", "est", "et", "une", "du", "pour", "qui", "dans", "pas", "sur", "au", "avec", "ce",
           "elle", "sont", "nous", "vous", "mais", "ou", "cette", "aux", "je", "être", "sa", "ses", "leur",
           "été", "fait", "comme", "tout", "plus", "très"},
    "de": {"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "zu", "den", "von", "mit", "sich",
           "auf", "für", "dem", "auch", "sie", "wir", "ich", "wie", "oder", "aber", "wird", "sind", "im",
           "werden", "nach", "bei", "noch", "einen", "dass", "sehr"},
    "es": {"el", "los", "las", "y", "su", "al", "más", "pero", "sus", "ya", "cuando", "muy", "sin",
           "también", "hay", "fue", "yo", "qué", "donde", "mucho", "puede", "tiene", "esto", "eso", "estos",
           "hasta", "desde", "ellos"},
    "it": {"il", "di", "che", "è", "per", "non", "sono", "della", "gli", "questo", "questa", "anche", "più",
           "nel", "alla", "ma", "dei", "delle", "essere", "molto", "dello", "perché", "ci", "sul", "come",
           "tutto", "loro", "hanno", "suo", "ancora", "nella", "degli"},
    "pt": {"o", "os", "do", "dos", "ao", "não", "em", "um", "uma", "na", "mas", "foi", "ele", "ela",
           "são", "também", "muito", "isso", "seu", "sua", "você", "pelo", "pela", "com", "nós", "já"},
}
MIN_STOPWORD_HITS = 2
NOT_CONTENT = set().union(*STOPWORDS.values()) | {
    "why", "who", "whom", "whose", "where", "when", "does", "did", "done", "was", "had", "will", "should",
    "could", "may", "might", "must", "shall", "its", "than", "then", "them", "these", "those", "into", "out",
    "some", "any", "all", "each", "one", "two", "many", "much", "more", "most", "very", "just", "also", "only",
    "such", "other", "our", "his", "her", "him", "she", "yes", "way", "ways", "thing", "things"}


INPUT_QUALITY = ["very poor", "poor", "average", "good", "excellent"]  # Magpie's input-quality scale


class LLMTags(BaseModel):
    """Tags only a model can give, asked for in one structured call."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(default="default", description="a name under models:")
    tags: list[Literal["difficulty", "category", "quality", "input_quality"]] = Field(
        description="difficulty (very easy .. very hard), category, quality (1-5), input_quality of a request "
                    "(Magpie: very poor .. excellent)")
    categories: list[str] | None = Field(default=None, description="the allowed categories (default: free text)")
    params: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 120})
    parse_retries: int = Field(default=2, ge=0, le=ceilings.MAX_RETRIES)

    @model_validator(mode="after")
    def _sensible(self) -> LLMTags:
        if not self.tags:
            raise ValueError("llm.tags is empty; list some of difficulty, category, quality, input_quality")
        if len(set(self.tags)) < len(self.tags):
            raise ValueError("llm.tags names a tag twice; list each once")
        if self.categories is not None and "category" not in self.tags:
            raise ValueError("llm.categories is given but 'category' is not in llm.tags; add it")
        if self.categories is not None and not self.categories:
            raise ValueError("llm.categories is empty; list the categories or leave it out")
        return self


class TaggerParams(NodeParams):
    field: str = Field(description="the state key holding the text to tag")
    output: str = Field(default="tags", description="state key for the dict of tags")
    llm: LLMTags | None = Field(default=None, description="optional model tags in one call: {model: judge, "
                                                          "tags: difficulty, category and/or quality}")
    refusal_markers: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSAL_MARKERS),
                                       description="phrases that mark a refusal (case-insensitive)")
    scaffolding_markers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SCAFFOLDING_MARKERS),
        description="phrases that mark leaked prompt scaffolding or JSON (case-insensitive): "
                    "`leaked_scaffolding`")
    echo_of: str | None = Field(default=None, description="a state key (e.g. question): `echoes` is true "
                                                          "when the text repeats that field's text")
    finish_reason: str | None = Field(default=None, description="a state key holding the model's finish "
                                      "reason (llm finish_reason_key): not \"stop\" counts as truncated")
    topic_of: list[str] = Field(default_factory=list, description="state keys (e.g. [question, topic]): "
                                "`on_topic` is true when the text shares a content word with one of them")


class Tagger(Node[TaggerParams]):
    """Tag a text with local quality figures (length, distinct-n, repetition, language...) and LLM tags.

    Local figures: see the module docstring. LLM tags (difficulty, category, quality) take one call.
    """

    def __init__(self, name: str, params: TaggerParams):
        super().__init__(name, params)
        self.markers = [_fold_quotes(marker.lower()) for marker in params.refusal_markers]
        self.scaffolding = [_fold_quotes(marker.lower()) for marker in params.scaffolding_markers]
        self.schema = OutputSchema(_llm_schema(params.llm)) if params.llm else None

    def reads(self) -> set[str]:
        return ({self.params.field} | set(self.params.topic_of)
                | {key for key in (self.params.echo_of, self.params.finish_reason) if key})

    def writes(self) -> set[str]:
        return {self.params.output}

    def models(self) -> set[str]:
        return {self.params.llm.model} if self.params.llm else set()

    async def setup(self, ctx: RunContext) -> None:
        await asyncio.to_thread(warm_up_readability)

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        text = state[self.params.field]
        if not isinstance(text, str):
            raise RecordError(f"tagger reads text but '{self.params.field}' holds {type(text).__name__}")
        tags = await asyncio.to_thread(text_tags, text, self.markers, self.scaffolding)
        if self.params.echo_of is not None:
            tags["echoes"] = echoes(text, str(state[self.params.echo_of]))
        if self.params.topic_of:
            tags["on_topic"] = shares_content_words(text, [str(state[key]) for key in self.params.topic_of])
        if self.params.finish_reason is not None:
            reason = state.get(self.params.finish_reason)
            tags["finish_reason"] = reason
            tags["truncated"] = tags["truncated"] or reason != "stop"
        if self.params.llm is not None:
            tags.update(await self._llm_tags(text, ctx))
        return {self.params.output: tags}

    async def _llm_tags(self, text: str, ctx: RunContext) -> dict[str, Any]:
        assert self.params.llm is not None and self.schema is not None
        llm = self.params.llm
        asks = {"difficulty": f"difficulty: how hard the task is, one of {', '.join(DIFFICULTY)}",
                "quality": "quality: 1 (unusable) to 5 (excellent) as training data",
                "input_quality": f"input_quality: how clear, specific and well-formed the request is, one of "
                                 f"{', '.join(INPUT_QUALITY)}",
                "category": "category: " + (f"one of {', '.join(llm.categories)}" if llm.categories
                                            else "a short topic or task category")}
        system = ("You label training data. Give " + "; ".join(asks[tag] for tag in llm.tags)
                  + ". Reply with JSON only.")
        verdict = await generate(ctx, node=self.name, model=llm.model, params=llm.params,
                                 messages=[{"role": "system", "content": system},
                                           {"role": "user", "content": f"Text to label:\n{text}"}],
                                 schema=self.schema, parse_retries=llm.parse_retries)
        return {tag: verdict[tag] for tag in llm.tags}


def _llm_schema(llm: LLMTags) -> dict[str, Any]:
    properties = {
        "difficulty": {"type": "string", "enum": DIFFICULTY},
        "quality": {"type": "integer", "enum": [1, 2, 3, 4, 5]},  # enums bind llama.cpp grammars
        "input_quality": {"type": "string", "enum": INPUT_QUALITY},
        "category": {"type": "string", "enum": llm.categories} if llm.categories
        else {"type": "string", "maxLength": 60},
    }
    return {"type": "object", "properties": {tag: properties[tag] for tag in llm.tags},
            "required": list(llm.tags)}


def text_tags(text: str, refusal_markers: list[str] = DEFAULT_REFUSAL_MARKERS,
              scaffolding_markers: list[str] = DEFAULT_SCAFFOLDING_MARKERS) -> dict[str, Any]:
    """All the local tags of one text (see the module docstring for each definition)."""
    words = WORD.findall(text.lower())
    return {
        "words": len(corpus_words(text)),
        "tokens": len(TOKEN.findall(text)),
        "chars": len(text),
        "sentences": count_sentences(text),
        "distinct_1": distinct_n(words, 1),
        "distinct_2": distinct_n(words, 2),
        "duplicate_line_ratio": duplicate_line_ratio(text),
        "top_2gram_char_share": top_ngram_char_share(words, 2, len(text)),
        "compression_ratio": compression_ratio(text),
        "flesch_reading_ease": _rounded(flesch_reading_ease(text)),
        "language": detect_language(words),
        "refusal": is_refusal(text, refusal_markers),
        "truncated": is_truncated(text),
        "ends_with_question": ends_with_question(text),
        "leaked_scaffolding": contains_marker(text, scaffolding_markers),
    }


def _rounded(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def count_sentences(text: str) -> int:
    pieces = [piece for piece in SENTENCE_END.split(text) if WORD.search(piece)]
    return len(pieces)


def distinct_n(words: list[str], n: int) -> float:
    value = corpus_distinct_n([words], n)  # the report's corpus figure, over this one text
    return round(value, 4) if value is not None else 0.0


def duplicate_line_ratio(text: str) -> float:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return round((len(lines) - len(set(lines))) / len(lines), 4) if lines else 0.0


def top_ngram_char_share(words: list[str], n: int, chars: int) -> float:
    grams = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams or not chars:
        return 0.0
    gram, count = grams.most_common(1)[0]
    return round(len(gram) * count / chars, 4)


def compression_ratio(text: str) -> float:
    value = corpus_compression_ratio([text])
    return round(value, 4) if value is not None else 0.0


def detect_language(words: list[str]) -> str:
    hits = {language: sum(word in stopwords for word in words) for language, stopwords in STOPWORDS.items()}
    ranked = sorted(hits.items(), key=lambda item: item[1], reverse=True)
    (best, top), (_, runner_up) = ranked[0], ranked[1]
    return best if top >= MIN_STOPWORD_HITS and top > runner_up else "unknown"


def is_refusal(text: str, markers: list[str]) -> bool:
    return contains_marker(text, markers)


def contains_marker(text: str, markers: list[str]) -> bool:
    """One of the (lower-cased) markers in the text, case-insensitively, curly apostrophes folded."""
    folded = _fold_quotes(text.lower())
    return any(marker in folded for marker in markers)


def is_truncated(text: str) -> bool:
    stripped = text.rstrip()
    if not stripped or stripped[-1] in DANGLING or stripped.count("```") % 2:
        return True
    if stripped.endswith("```"):
        return False
    return stripped.rstrip(CLOSERS)[-1:] not in TERMINAL


def ends_with_question(text: str) -> bool:
    return text.rstrip().rstrip(CLOSERS).endswith(("?", "？"))


def echoes(text: str, other: str) -> bool:
    """The other text (at least three words) repeated inside this one, after normalising both."""
    mine, theirs = _normalised(text), _normalised(other)
    return len(theirs.split()) >= 3 and theirs in mine


def shares_content_words(text: str, others: list[str]) -> bool:
    """At least one content word of the text is one of the others' (see `on_topic` in the module docstring)."""
    mine = content_words(text)
    return any(mine & content_words(other) for other in others)


def content_words(text: str) -> set[str]:
    """The text's content words, each also without a plural ending ("tides": tides, tide, tid)."""
    forms: set[str] = set()
    for word in WORD.findall(_fold_quotes(text.lower())):
        if len(word) < 3 or word in NOT_CONTENT or word.isdigit():
            continue
        forms.add(word)
        if word.endswith("s") and not word.endswith("ss"):
            for stem in (word[:-1], word[:-2] if word.endswith("es") else "",
                         word[:-3] + "y" if word.endswith("ies") else ""):
                if len(stem) >= 3:
                    forms.add(stem)
    return forms


def _normalised(text: str) -> str:
    return " ".join(WORD.findall(_fold_quotes(text.lower())))


def _fold_quotes(text: str) -> str:
    return text.replace("’", "'").replace("‘", "'")
