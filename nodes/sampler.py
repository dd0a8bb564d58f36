"""`sampler`: fill record fields from attribute slots drawn in code, never by an LLM.

LLMs asked to pick "at random" are badly skewed (methods.md §1.13, diffuse distributions), so attribute
values (persona, topic, tone, ...) are drawn here, reproducibly, and written to the state for prompts and
provenance. Two modes:

- `random`: each record draws from an RNG seeded by `seed` and the record's id, so a re-run (or a resume)
  gives every record the same values whatever order the records are scheduled in.
- `cover`: walk the cartesian product of the slots without repeats, in a seeded shuffled order, a new
  shuffled pass once the product is used up (TF1-style combinatorial scaffolds). There a weight is how
  many times a value comes per pass, so it must be a whole number. The walk position is the
  record's `index` (rows of a `none` seed source have one), else a run-wide counter, which a resume
  continues past the positions finished records took (records cut short leave their combinations out).

`distinct: [speaker_a, speaker_b]` makes those slots take different values from one shared list (DiaSynth
persona pairs); in cover mode the walk goes over unordered pairs, so 6 personas give 15 pairs.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from synthloom.config import ceilings
from synthloom.engine.kept_log import KeptLog, kept_log
from synthloom.errors import ConfigError
from synthloom.graph.context import RunContext
from synthloom.graph.node import Node, NodeParams
from synthloom.graph.shared_state import Numbering


class FileSlot(BaseModel):
    """Values read from a file: .txt one per line, .jsonl one JSON value per line, .json a list, .yaml the
    list under the slot's name (or under `key` in `file.yaml#key`)."""

    model_config = ConfigDict(extra="forbid")
    file: str = Field(description="path relative to the graph file")


class WeightedSlot(BaseModel):
    """Values with relative weights, e.g. {formal: 3, casual: 1} draws formal three times as often."""

    model_config = ConfigDict(extra="forbid")
    choices: dict[str, ceilings.Weight] = Field(description="value: weight (> 0)")


SlotSpec = list[Any] | FileSlot | WeightedSlot


class SamplerParams(NodeParams):
    slots: dict[str, SlotSpec] = Field(
        description="state key -> values: an inline list, {file: path} or {choices: {value: weight}}")
    mode: Literal["random", "cover"] = Field(
        default="random", description="random: seeded draw per record; cover: every combination once, "
                                      "in a seeded shuffled order, then a new pass")
    seed: ceilings.Seed = Field(default=0, description="same seed, same records")
    distinct: list[str] | None = Field(
        default=None, description="slot names that must take different values from one shared "
                                  "list, e.g. speaker_a and speaker_b (a YAML anchor keeps the lists equal)")
    output: str | None = Field(default=None, description="also write all draws as one dict under this key")
    index_field: str | None = Field(
        default="index", description="cover mode: the state key holding the record's position (rows of a "
                                     "`none` seed source have `index`); without it a run-wide counter is used")

    @field_validator("slots", mode="before")
    @classmethod
    def _known_shapes(cls, slots: Any) -> Any:
        """One clear message for a mistyped slot, instead of one per shape pydantic tried."""
        for name, spec in (slots.items() if isinstance(slots, dict) else []):
            if not (isinstance(spec, list) or isinstance(spec, dict) and set(spec) in ({"file"}, {"choices"})):
                raise ValueError(f"slot '{name}' should be a list of values, {{file: path}} or "
                                 f"{{choices: {{value: weight}}}}")
            choices = spec.get("choices") if isinstance(spec, dict) else None
            if isinstance(choices, dict) and any(isinstance(weight, (int, float)) and weight > ceilings.MAX_WEIGHT
                                                 for weight in choices.values()):
                raise ValueError(f"slot '{name}': a weight is at most {ceilings.MAX_WEIGHT}")
        return slots

    @model_validator(mode="after")
    def _consistent(self) -> SamplerParams:
        if not self.slots:
            raise ValueError("slots is empty; give at least one slot, e.g. slots: {persona: [teacher, nurse]}")
        for name, spec in self.slots.items():
            if isinstance(spec, list) and not spec:
                raise ValueError(f"slot '{name}' has no values; give a non-empty list")
            if isinstance(spec, WeightedSlot):
                if not spec.choices:
                    raise ValueError(f"slot '{name}' has no choices; give {{value: weight, ...}}")
                if any(weight <= 0 for weight in spec.choices.values()):
                    raise ValueError(f"slot '{name}': every weight must be > 0")
                if self.mode == "cover" and any(weight != int(weight) for weight in spec.choices.values()):
                    raise ValueError(f"slot '{name}': in mode: cover a weight is how many times a value comes "
                                     f"per pass, so give whole numbers")
                if self.mode == "cover" and sum(spec.choices.values()) > ceilings.MAX_WEIGHT:
                    raise ValueError(f"slot '{name}': in mode: cover the weights add up to at most "
                                     f"{ceilings.MAX_WEIGHT} (each is a copy of the value per pass)")
                if self.mode == "cover" and name in (self.distinct or []):
                    raise ValueError(f"slot '{name}' is in distinct, whose pairs mode: cover walks once "
                                     f"each; give it a plain list")
        if self.distinct is not None:
            unknown = [name for name in self.distinct if name not in self.slots]
            if unknown:
                raise ValueError(f"distinct names {', '.join(unknown)}, which are not slots "
                                 f"(slots: {', '.join(self.slots)})")
            if len(set(self.distinct)) < 2:
                raise ValueError("distinct needs two or more different slot names, e.g. [speaker_a, speaker_b]")
        if self.output is not None and self.output in self.slots:
            raise ValueError(f"output '{self.output}' is also a slot name; pick another key")
        return self


@dataclass(frozen=True)
class Slot:
    name: str
    values: list[Any]
    weights: list[float] | None = None


class Sampler(Node[SamplerParams]):
    """Draw attribute slots (persona, topic, tone) in code, seeded: per record, or every combination once.

    Values are loaded in `setup`; cover mode's counter (when records have no index) is run-wide (`ctx.shared_index`).
    """


    def __init__(self, name: str, params: SamplerParams):
        super().__init__(name, params)
        self.slots: list[Slot] = []
        self.walk: CoverWalk | None = None

    def writes(self) -> set[str]:
        return set(self.params.slots) | ({self.params.output} if self.params.output else set())

    async def setup(self, ctx: RunContext) -> None:
        key = f"nodes.{self.name}"
        self.slots = [_load_slot(name, spec, ctx, f"{key}.slots.{name}")
                      for name, spec in self.params.slots.items()]
        if self.params.distinct:
            _check_distinct_group(self.slots, self.params.distinct, f"{key}.distinct")
        if self.params.mode == "cover":
            self.walk = CoverWalk(self.slots, self.params.distinct or [], self.params.seed)
            # on --resume, go on past the positions finished records took (a counter started again at 0
            # would give the first combinations twice and never reach the last)
            highest = max((int(entry["signature"]) for entry in self._positions_log(ctx).replay()), default=None)
            if highest is not None:
                counter = await ctx.shared_index(self._counter_key, Numbering())
                await counter.check_and_add(highest, None)

    async def teardown(self, ctx: RunContext) -> None:
        if self.walk is not None:
            self._positions_log(ctx).close()

    @property
    def _counter_key(self) -> str:
        return f"sampler:{self.name}:position"

    def _positions_log(self, ctx: RunContext) -> KeptLog:
        """The position each record took from the counter, beside the run's output (pools/), for --resume."""
        return kept_log(ctx, f"sampler-{self.name}")

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        if self.walk is not None:
            draws = self.walk.combination(await self._position(state, ctx))
        else:
            draws = self._random_draws(random.Random(f"{self.params.seed}:{state['id']}"))
        if self.params.output:
            return {**draws, self.params.output: dict(draws)}
        return draws

    async def _position(self, state: Mapping[str, Any], ctx: RunContext) -> int:
        index = state.get(self.params.index_field) if self.params.index_field else None
        if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
            return index
        counter = await ctx.shared_index(self._counter_key, Numbering())  # run-wide, every shard
        position: int = await counter.check_and_add(None, state["id"])
        self._positions_log(ctx).append(state["id"], str(position))
        return position

    def _random_draws(self, rng: random.Random) -> dict[str, Any]:
        draws: dict[str, Any] = {}
        group = self.params.distinct or []
        for slot in self.slots:
            taken = [draws[name] for name in group if name in draws] if slot.name in group else []
            draws[slot.name] = _draw(slot, rng, exclude=taken)
        return draws


def _draw(slot: Slot, rng: random.Random, exclude: list[Any]) -> Any:
    """One value, weighted when the slot has weights, never one of `exclude` (distinct slots)."""
    if not exclude and not slot.weights:
        return rng.choice(slot.values)
    indexes = [i for i, value in enumerate(slot.values) if value not in exclude]
    weights = [slot.weights[i] for i in indexes] if slot.weights else None
    return slot.values[rng.choices(indexes, weights=weights)[0]]


def _load_slot(name: str, spec: SlotSpec, ctx: RunContext, key: str) -> Slot:
    if isinstance(spec, WeightedSlot):
        return Slot(name, list(spec.choices), list(spec.choices.values()))
    if isinstance(spec, list):
        return Slot(name, spec)
    path_text, _, list_key = spec.file.partition("#")
    path, text = ctx.read_file(path_text, key, "slot file ")
    try:
        if path.suffix in (".yaml", ".yml"):
            values = _yaml_list(path, text, list_key or name, key)
        elif path.suffix == ".json":
            values = json.loads(text)
            if not isinstance(values, list):
                raise ConfigError(f"{path} should hold a JSON list of values", key=key)
        elif path.suffix == ".jsonl":
            values = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            values = [line.strip() for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error.msg}, line {error.lineno})", key=key) from None
    if not values:
        raise ConfigError(f"slot file {path} has no values", key=key)
    return Slot(name, values)


def _yaml_list(path: Path, text: str, list_key: str, key: str) -> list[Any]:
    """The list under `list_key` of the YAML mapping in `path`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML ({error})", key=key) from None
    values = data.get(list_key) if isinstance(data, dict) else None
    if not isinstance(values, list):
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else "none"
        raise ConfigError(f"{path} has no list under '{list_key}' (its keys: {keys}); name the list with "
                          f"{path.name}#key", key=key)
    return values


def _check_distinct_group(slots: list[Slot], group: list[str], key: str) -> None:
    members = [slot for slot in slots if slot.name in group]
    shared = members[0]
    if any(slot.values != shared.values or slot.weights != shared.weights for slot in members[1:]):
        raise ConfigError(f"slots {', '.join(group)} must share one value list to be distinct (a YAML anchor "
                          f"&personas / *personas keeps them equal)", key=key)
    different = len(_unique(shared.values))
    if different < len(set(group)):
        raise ConfigError(f"distinct needs {len(set(group))} different values but slot '{shared.name}' has "
                          f"{different}", key=key)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class CoverWalk:
    """Position -> one combination of the slots, every combination once per pass (a value of weight w
    counts as w values).

    The product can be far too big to list (six slots of a hundred values is 10^12), so a position is
    mapped through a seeded bijection (`ShuffledRange`) and decoded digit by digit, one digit per axis: a
    slot, or for a `distinct` group the unordered choice of k of its values.
    """

    def __init__(self, slots: list[Slot], distinct: list[str], seed: int):
        self.seed = seed
        self.order = [slot.name for slot in slots]
        group = [slot for slot in slots if slot.name in distinct]
        self.group_names = [slot.name for slot in group]
        self.group_values = _unique(group[0].values) if group else []
        self.singles = [slot for slot in slots if slot.name not in distinct]
        self.single_values = [_repeated_by_weight(slot) for slot in self.singles]
        self.sizes = [len(values) for values in self.single_values]
        if group:
            self.sizes.append(math.comb(len(self.group_values), len(group)))
        self.total = math.prod(self.sizes)

    def combination(self, position: int) -> dict[str, Any]:
        round_number, offset = divmod(position, self.total)
        number = ShuffledRange(self.total, f"{self.seed}:pass:{round_number}")[offset]
        draws: dict[str, Any] = {}
        digits = []
        for size in reversed(self.sizes):
            number, digit = divmod(number, size)
            digits.append(digit)
        digits.reverse()
        for slot, values, digit in zip(self.singles, self.single_values, digits, strict=False):
            draws[slot.name] = values[digit]  # zip stops before the group's digit, if there is one
        if self.group_names:
            chosen = [self.group_values[i]
                      for i in _combination(digits[-1], len(self.group_values), len(self.group_names))]
            random.Random(f"{self.seed}:roles:{position}").shuffle(chosen)  # no slot favours early values
            draws.update(zip(self.group_names, chosen, strict=True))
        return {name: draws[name] for name in self.order}


def _repeated_by_weight(slot: Slot) -> list[Any]:
    if slot.weights is None:
        return slot.values
    return [value for value, weight in zip(slot.values, slot.weights, strict=True) for _ in range(int(weight))]


def _unique(values: list[Any]) -> list[Any]:
    """The values without repeats, first occurrence kept (values may be dicts, so compare as JSON)."""
    seen: set[str] = set()
    unique = []
    for value in values:
        if (text := _canonical(value)) not in seen:
            seen.add(text)
            unique.append(value)
    return unique


def _combination(rank: int, n: int, k: int) -> list[int]:
    """The `rank`-th k-subset of range(n) in lexicographic order (combinatorial number system)."""
    chosen, candidate = [], 0
    for left in range(k, 0, -1):
        while (block := math.comb(n - candidate - 1, left - 1)) <= rank:
            rank -= block
            candidate += 1
        chosen.append(candidate)
        candidate += 1
    return chosen


class ShuffledRange:
    """A seeded permutation of range(size), computed one position at a time and never stored.

    A four-round Feistel network over the smallest even-bit domain that holds `size` is a bijection on
    that domain; stepping again while the result is out of range ("cycle walking") makes it a bijection
    on range(size). The domain is under 4x size, so a lookup takes a few hash rounds on average.
    """

    ROUNDS = 4

    def __init__(self, size: int, key: str):
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        bits = max(2, (size - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1
        self.key = hashlib.sha256(key.encode()).digest()[:16]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, position: int) -> int:
        if not 0 <= position < self.size:
            raise IndexError(position)
        value = self._permute(position)
        while value >= self.size:
            value = self._permute(value)
        return value

    def _permute(self, value: int) -> int:
        left, right = value >> self.half, value & self.mask
        for round_number in range(self.ROUNDS):
            digest = hashlib.blake2b(right.to_bytes(8, "little"), key=self.key, digest_size=8,
                                     person=round_number.to_bytes(16, "little")).digest()
            left, right = right, left ^ (int.from_bytes(digest, "little") & self.mask)
        return (left << self.half) | right
