"""Glue for the fables workflow (TF1-EN-3M, Nadas et al. 2025) and the agentinstruct workflow.

- `YamlSampler`: the built-in `sampler` node, whose `{file: ...}` slots may also name a YAML file (the
  built-in reads .yaml as plain lines). `data/fable_slots.yaml` takes the list under the slot's own name,
  `data/taxonomy.yaml#transformations` the list under `transformations`. Everything else (random and
  cover modes, distinct groups, weights) is the built-in sampler's.
- `fable_prompt`: the generator's instruction, rendered once from the six sampled slots so the llm node
  and the SFT output show the model exactly the same text.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from synthloom import node
from synthloom.context import RunContext
from synthloom.errors import ConfigError
from synthloom_nodes.sampler import FileSlot, Sampler

YAML_SUFFIXES = (".yaml", ".yml")


class YamlSampler(Sampler):
    """Draw attribute slots in code like `sampler`; a {file: x.yaml} slot reads the list under its name
    (or under `key` in x.yaml#key)."""

    async def setup(self, ctx: RunContext) -> None:
        resolved: dict[str, Any] = {}
        for name, spec in self.p.slots.items():
            if isinstance(spec, FileSlot):
                path_text, _, key = spec.file.partition("#")
                if path_text.endswith(YAML_SUFFIXES):
                    spec = yaml_list(ctx.resolve_path(path_text), key or name, f"nodes.{self.name}.slots.{name}")
            resolved[name] = spec
        self.p = self.p.model_copy(update={"slots": resolved})
        await super().setup(ctx)


def yaml_list(path: Path, key: str, where: str) -> list[Any]:
    """The non-empty list under `key` of the YAML mapping in `path`."""
    if not path.is_file():
        raise ConfigError(f"slot file {path} does not exist (paths are relative to the graph file)", key=where)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML ({error})", key=where) from None
    values = data.get(key) if isinstance(data, dict) else None
    if not isinstance(values, list) or not values:
        keys = ", ".join(data) if isinstance(data, dict) else "none"
        raise ConfigError(f"{path} has no non-empty list under '{key}' (its keys: {keys}); "
                          f"name the list with {path.name}#key", key=where)
    return values


def with_article(phrase: str) -> str:
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


@node
def fable_prompt(character: str, trait: str, setting: str, conflict: str, resolution: str, moral: str) -> str:
    """The generator's instruction from the six slots (main character "a {trait} {character}")."""
    return (f"Write a short fable for children about {with_article(f'{trait} {character}')}.\n"
            f"Setting: {setting}.\n"
            f"Problem: {conflict}.\n"
            f"Ending: {resolution}.\n"
            f"Moral: {moral}.\n"
            f"Do not give the animals names; call them by their kind. Let them talk a little. "
            f"Finish with one sentence that states the moral.")
