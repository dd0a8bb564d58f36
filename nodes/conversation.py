"""`conversation`: two or more roles, each its own model and system prompt, taking turns (a user simulator and
an assistant; a suggester and an editor). Writes the dialogue as TRL `messages` and who said what.

Each role sees the dialogue from its own seat: its turns as `assistant`, everyone else's as `user`, after its
own system prompt. That is how a chat model is trained to continue, so each side stays in character without
being told about the other's instructions.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from synthloom.config import ceilings
from synthloom.engine.generate import generate
from synthloom.graph.context import RunContext
from synthloom.graph.node import Node, NodeParams
from synthloom.sandbox.expressions import Condition
from synthloom.sandbox.templates import Template

TURN_NAMES = frozenset({"last", "turn", "speaker"})
"""What `stop_when` sees besides the state: the last message's text, the message count, who said it."""


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(description="who speaks, as the transcript records it")
    model: str = Field(default="default", description="a name under models:")
    system: str | None = Field(default=None, description="this role's system prompt (template)")
    as_: Literal["user", "assistant"] | None = Field(
        default=None, alias="as", description="the role its turns have in the output messages (default: user "
                                              "for the first role, assistant for the others)")
    params: dict[str, Any] = Field(default_factory=dict, description="overrides of the model's params")


class ConversationParams(NodeParams):
    roles: list[Role] = Field(min_length=2, description="the speakers, in turn order: {name, model, system, as}")
    opening: str = Field(description="template of the first message, said by the first role as written")
    max_turns: int = Field(default=6, ge=1, le=ceilings.MAX_STEPS,
                           description="the most messages, the opening included")
    stop_when: str | None = Field(default=None, description="expression over the state plus `last` (the last "
                                  "message), `turn` (messages so far) and `speaker`; true ends the dialogue")
    stop_phrases: list[str] = Field(default_factory=list, description="a message containing one ends the "
                                    "dialogue; the phrase is cut from it (an empty message is left out)")
    output: str = Field(default="messages", description="state key for the TRL messages; `<output>_transcript`"
                        " gets [{speaker, content}]")
    params: dict[str, Any] = Field(default_factory=dict, description="params for every role's calls")

    @model_validator(mode="after")
    def _roles_named_once(self) -> ConversationParams:
        names = [role.name for role in self.roles]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"roles: '{repeated[0]}' is named twice; give each role its own name")
        for index, role in enumerate(self.roles):
            if role.as_ is None:
                role.as_ = "user" if index == 0 else "assistant"
        return self


class Conversation(Node[ConversationParams]):
    """Roles with their own models and system prompts take turns until max_turns, stop_when or a stop phrase."""

    def __init__(self, name: str, params: ConversationParams):
        super().__init__(name, params)
        self.opening = Template(params.opening)
        self.systems = {role.name: Template(role.system) for role in params.roles if role.system}
        self.stop_when = Condition(params.stop_when) if params.stop_when else None
        self.transcript_key = f"{params.output}_transcript"

    def reads(self) -> set[str]:
        keys = set(self.opening.variables).union(*(template.variables for template in self.systems.values()))
        return keys | (set(self.stop_when.names - TURN_NAMES) if self.stop_when else set())

    def writes(self) -> set[str]:
        return {self.params.output, self.transcript_key}

    def models(self) -> set[str]:
        return {role.model for role in self.params.roles}

    async def run(self, state: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        roles = self.params.roles
        systems = {name: template.render(state) for name, template in self.systems.items()}
        transcript = [{"speaker": roles[0].name, "content": self.opening.render(state)}]
        while len(transcript) < self.params.max_turns:
            role = roles[len(transcript) % len(roles)]
            reply = await generate(ctx, node=self.name, model=role.model, params={**self.params.params, **role.params},
                                   messages=self._seen_by(role, systems.get(role.name), transcript))
            text, stop = self._cut_stop_phrase(reply)
            if text:
                transcript.append({"speaker": role.name, "content": text})
            if stop or not text or self._stop_holds(state, transcript):
                break
        as_role = {role.name: role.as_ for role in roles}
        messages = [{"role": as_role[entry["speaker"]], "content": entry["content"]} for entry in transcript]
        return {self.params.output: messages, self.transcript_key: transcript}

    def _seen_by(self, role: Role, system: str | None, transcript: list[dict[str, str]]) -> list[dict[str, str]]:
        """The dialogue from `role`'s seat. With three or more roles the others are told apart by name, and
        consecutive turns of others are joined, since chat templates expect user and assistant to alternate."""
        named = len(self.params.roles) > 2
        seen: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        for entry in transcript:
            mine = entry["speaker"] == role.name
            content = entry["content"] if mine or not named else f"{entry['speaker']}: {entry['content']}"
            kind = "assistant" if mine else "user"
            if seen and seen[-1]["role"] == kind:
                seen[-1] = {"role": kind, "content": f"{seen[-1]['content']}\n\n{content}"}
            else:
                seen.append({"role": kind, "content": content})
        return seen

    def _cut_stop_phrase(self, reply: str) -> tuple[str, bool]:
        for phrase in self.params.stop_phrases:
            if phrase in reply:
                return reply.replace(phrase, "").strip(), True
        return reply.strip(), False

    def _stop_holds(self, state: Mapping[str, Any], transcript: list[dict[str, str]]) -> bool:
        if self.stop_when is None:
            return False
        last = transcript[-1]
        return self.stop_when.holds(state, {"last": last["content"], "turn": len(transcript),
                                            "speaker": last["speaker"]})
