"""Glue for the fables workflow (TF1-EN-3M, Nadas et al. 2025).

`fable_prompt`: the generator's instruction, rendered once from the six sampled slots so the llm node and
the SFT output show the model exactly the same text.
"""
from __future__ import annotations

from synthloom import node


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
