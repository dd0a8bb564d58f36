"""The ceiling of every number a graph file may give, in one table.

A graph may come from a stranger, and a number that multiplies work (`n: 100000` requests per record,
`max_in_flight: 1e9` seed rows held at once, a cover-mode weight of 1e9 repeated values) must fail the
check, not the machine. Every numeric field of a node's params and of the graph's config is declared with
one of these (`Field(le=...)` or the `Annotated` aliases below), so pydantic refuses a number past its
ceiling when the graph is validated; tests/test_resource_bounds.py walks every registered node type and
fails on a numeric field without one. The README's bounds list quotes these values.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_SAMPLES = 100
"""llm `n`: completions asked for per record."""
MAX_RETRIES = 10
"""`parse_retries`: a reply asked for again."""
MAX_MODEL_RETRIES = 20
"""A model's `max_retries` of a failed request."""
MAX_STEPS = 100
"""agent `max_steps`, conversation `max_turns`."""
MAX_VISITS = 1_000
"""An edge's `max_visits` (how often a loop may go round)."""
MAX_RECURSION = 10_000
"""langgraph `recursion_limit`."""
MAX_IN_FLIGHT = 10_000
"""`run.max_in_flight`: records admitted at once (each holds its state in memory)."""
MAX_DRAW = 1_000
"""few_shot `k`, pool_sample `k_seed`/`k_generated`, pairs `max_pairs`: items drawn per record."""
MAX_POOL_SIZE = 1_000_000
"""novelty / pool_sample `max_size`."""
MAX_WEIGHT = 1_000_000
"""A sampler weight; in cover mode also the sum of a slot's weights (each copy is kept in a list)."""
MAX_NUM_PERM = 1_024
"""minhash `num_perm` (the sketch is stored per kept text; SQLite refuses a row past about 30,000)."""
MAX_NGRAM = 64
"""minhash `ngram`: words per shingle."""
MAX_SHUFFLE_BUFFER = 1_000_000
"""`seed.shuffle_buffer`: seed rows held to shuffle."""
MAX_ROWS = 10**12
"""`seed.limit`, a `none` source's `rows`, a shard count."""
MAX_CONCURRENCY = 4_096
"""A model's `max_concurrency`."""
MAX_BATCH = 1_024
"""A model's `batch_size`."""
MAX_BATCH_REQUESTS = 50_000
"""A model's `batch.max_requests`: lines per Batch API submission (OpenAI's own limit)."""
MAX_CONTEXT = 1_048_576
"""The embedded model's `n_ctx` (a KV cache of that many tokens per sequence)."""
MAX_THREADS = 256
"""llama.cpp threads of the embedded model: more than any machine it runs on has cores."""
MAX_SECONDS = 86_400.0
"""Timeouts, waits and drain times."""
MAX_RATE = 1e12
"""`rpm`, `tpm` ceilings, prices."""
MAX_SCORE = 1e12
"""Scores, margins and thresholds a graph compares with (they make no work; bounded to stay finite)."""
MAX_TOOL_ROUNDS = 50
"""llm `max_tool_rounds`: model turns that may call tools, per record."""
MAX_TOOL_CALLS = 1_000
"""A tool entry's `max_calls` per record."""
MAX_TOOL_RESULT_CHARS = 1_000_000
"""A tool entry's `max_result_chars` (a result is held in memory and fed back to the model)."""
MAX_TOOL_THREADS = 256
"""A python tool entry's `threads`: calls of its sync functions running at once (each a thread)."""
MAX_FAILURE_WINDOW = 1_000_000
"""`run.failure_window`: recent records whose outcome is kept."""

Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
"""A random seed: any 64-bit integer."""
Weight = Annotated[float, Field(le=MAX_WEIGHT)]
"""A sampler weight (the sampler says when one is not > 0)."""
Score = Annotated[float, Field(ge=-MAX_SCORE, le=MAX_SCORE)]
ScaleEnd = Annotated[int, Field(ge=-int(MAX_SCORE), le=int(MAX_SCORE))]
Price = Annotated[float, Field(ge=0, le=MAX_RATE)]
ShardPart = Annotated[int, Field(ge=0, le=MAX_ROWS)]
