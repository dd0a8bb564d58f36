"""Custom nodes as a user would write them, loaded by tests through `type: tests.plugins_for_tests:Name`."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synthloom import Drop, Node, NodeParams, node


@node
def word_count(answer: str) -> dict:
    """Count the words of the answer."""
    return {"words": len(answer.split())}


@node(writes=["shout"])
async def shouted(question: str, *, suffix: str = "!", ctx: Any = None) -> dict:
    """Upper-case the question (an async node with a YAML parameter and the run context)."""
    assert ctx is not None and ctx.graph_name
    return {"shout": question.upper() + suffix}


@node
def explode(topic: str) -> dict:
    """Fail on purpose for one topic, to test failure handling."""
    if topic == "boom":
        raise ValueError("this topic always fails")
    return {"checked": True}


class KeepLong(Node):
    """Drop records whose text is shorter than min_words."""

    class Params(NodeParams):
        field: str
        min_words: int = 3

    def reads(self) -> set[str]:
        return {self.params.field}

    def run(self, state: Mapping[str, Any], ctx: Any) -> Drop | None:
        if len(str(state[self.params.field]).split()) < self.params.min_words:
            return Drop("too short", {"words": len(str(state[self.params.field]).split())})
        return None
