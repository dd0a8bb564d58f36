"""What a graph may cost: YAML aliases, templates, expressions and parameters that allocate are bounded.

A bound that trips fails that record (or the graph check) with a message saying which; the run goes on."""
from __future__ import annotations

import json
import os
import re
import time
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import annotated_types
import jinja2
import pytest
import synthloom
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from synthloom.errors import ConfigError, RecordError
from synthloom.sandbox.expressions import Condition
from synthloom.sandbox.templates import Template

from tests.in_a_child import run_in_a_child
from tests.test_graph_trust import assert_refused, cli

STATE = {"question": "What is a tide?", "review": {"score": 4}, "text": "abc" * 1000, "big": "a" * 1_000_000}


@pytest.mark.parametrize("source,words", [
    ("{{ 'a' * 10**9 }}", "'*' would make a value of 1000000000"),
    ("{{ 2 ** (10**10) }}", "'**' would make an integer"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "loop iterations|ran more than 0.5 CPU seconds"),
    ("{% for a in text %}{% for b in text %}{% endfor %}{% endfor %}", "loop iterations|ran more than 0.5 CPU seconds"),
    ("{{ lipsum(10**6) }}", "lipsum is bounded"),
    ("{{ text|center(10**9) }}", "the center filter was given 1000000000"),
    ("{{ text.center(3 * 10**9) }}", "str.center was given 3000000000"),
    ("{{ '{:>999999999}'.format(1) }}", "names a width of 999999999"),
    ("{{ '%0999999999d' % 1 }}", "names a width"),
    ("{{ text|replace('', text) }}", "str.replace would make"),
    ("{% set a = text * 300 %}{% set b = a ~ a %}{{ b }}", "'~' would make"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
     "calls|ran more than 0.5 CPU seconds"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursed too deeply"),
    ("{% for i in range(99999) %}{{ text }}{% endfor %}", "rendered text longer than"),
    ("{{ range(10**7)|list }}", "MAX_RANGE"),
    # issue 19: what filters and methods produce, not what is typed
    ("{{ ('\\n' * 1000) | indent(1000000, true, true) }}", "the indent filter would make a value of 1001001000"),
    ("{{ ('\\n' * 10000) | indent(1000000, true, true) }}", "the indent filter would make a value"),
    ("{% for i in range(1000) %}{% for j in range(900) %}{{ range(100000)|sort|length }}{% endfor %}{% endfor %}",
     "made more than 10000000 characters|ran more than 0.5 CPU seconds"),
    ("{{ (['a' * 1000000] * 1000) | join }}", "the join filter would make a value"),
    ("{{ (['a' * 1000000] * 1000) | join('-', attribute='upper') }}", "the join filter would make a value"),
    ("{{ '-'.join(['a' * 1000000] * 1000) }}", "str.join would make a value"),
    ("{{ ('%(a)s' * 100000) | format(a=text) }}", "the format filter would make a value"),
    ("{{ ('{0}' * 300000).format(text) }}", "str.format would make a value"),
    ("{{ text | wordwrap(1, wrapstring='y' * 100000) }}", "the wordwrap filter would make a value"),
    ("{{ ([[1] * 1000000] * 10) | sum(start=[]) }}", "the sum filter would make a value"),
    ("{{ text.translate({97: 'x' * 100000}) }}", "str.translate would make a value"),
    ("{{ ('\\t' * 1000).expandtabs(1000000) }}", "str.expandtabs would make a value"),
    ("{% for x in ['a', 'b'] | batch(1000000, 'x') %}{{ x | length }}{% endfor %}", "the batch filter would make"),
    ("{% for i in range(1000) %}{{ (text * 300) | list | length }}{% endfor %}",
     "made more than 10000000|ran more than 0.5 CPU seconds"),
    ("{% for i in range(1000) %}{% for j in range(1000) %}{{ big.count('b') }}{% endfor %}{% endfor %}",
     "ran more than 0.5 CPU seconds"),
])
def test_template_bounds_fail_the_record_quickly(source: str, words: str) -> None:
    template = Template(source)  # compiling folds no constant: 'a' * 10**9 is not evaluated here
    outcome = run_in_a_child(lambda: template.render(STATE), what=source)  # a regressed bound: fails in 20 s
    assert "RecordError" in outcome.raised, outcome
    assert re.search("template .*" + words.replace("*", r"\*").replace("(", r"\("), outcome.message), outcome
    assert outcome.seconds < 5


def test_templates_within_the_bounds_still_work() -> None:
    assert Template("{{ 'ab' * 3 }} {{ 7 ** 2 }} {{ question|upper }} {{ '%05d' % 42 }} {{ 'x' ~ 1 }}").render(
        STATE) == "ababab 49 WHAT IS A TIDE? 00042 x1"
    assert Template("{% for w in question.split() %}{{ w[0] }}{% endfor %}").render(STATE) == "Wiat"


@pytest.mark.parametrize("source", [
    "Step 1: {{ text0 }}", "Hello {{ a }} and {{b}}\n", "x {{ a }}\n\n", "{{ a }}",
    "{{ n }}|{{ f }}|{{ l }}|{{ d }}|{{ t }}", "{{ a|upper }} {{ b }}", "{% if t %}{{ a }}{% endif %}",
    "{{ d.k }}", "{{ missing }}", "{{ a }}{{ missing }}",
])
def test_plain_substitution_renders_what_jinja_renders(source: str) -> None:
    """Templates of text and `{{ name }}` only skip Jinja's context (most prompts, on every node step); the
    text, and the error for a missing variable, are Jinja's own."""
    state = {"text0": "hé\n", "a": "A", "b": 3, "n": None, "f": 1.5, "l": [1, "x"], "d": {"k": 1}, "t": True}
    reference = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(source)
    try:
        expected = reference.render(state)
    except jinja2.UndefinedError:
        with pytest.raises(RecordError, match="template needs 'missing' is undefined"):
            Template(source).render(state)
        return
    assert Template(source).render(state) == expected


def test_a_substitution_past_the_rendered_bound_fails_the_record() -> None:
    with pytest.raises(RecordError, match="rendered text longer than"):
        Template("{{ text }}{{ text }}").render({"text": "x" * 600_000})


@pytest.mark.parametrize("source", ["{{ (3)|wordwrap(1) }}", "{{ 'abc'|truncate(2) }}"])
def test_a_filter_given_what_it_did_not_expect_fails_the_record_in_one_line(source: str) -> None:
    """Found by the property test: `wordwrap` calls a str method on a number (AttributeError), `truncate`
    asserts its length (AssertionError); both went past us as tracebacks."""
    with pytest.raises(RecordError, match="^template failed: (AttributeError|AssertionError): "):
        Template(source).render({})


def test_a_missing_attribute_names_the_variable() -> None:
    with pytest.raises(RecordError, match="'question.text', but 'question' is a str and has no attribute 'text'"):
        Template("Q: {{ question.text }}").render(STATE)
    with pytest.raises(RecordError, match="'review' is a dict and has no attribute 'scroe'"):
        Template("{{ review.scroe }}").render(STATE)


@pytest.mark.parametrize("source,words", [
    ("4000000 ** 4000000", "'\\*\\*' would make an integer"),
    ("text.center(3 * 10**9)", "str.center was given 3000000000"),
    ("text.ljust(10**9)", "str.ljust was given"),
    ("text.zfill(10**9)", "str.zfill was given"),
    ("text.replace('', text)", "str.replace would make"),
    ("text * 10**6", "'\\*' would make a value"),
    ("'%0999999999d' % 1", "names a width"),
    ("f'{1:>999999999}'", "names a width"),
    ("[text * 300 for t in text]", "more than 10000000 characters"),
    ("round(5, -10**9)", "round\\(\\) takes at most"),
    ("2 << 10**9", "'<<' would make an integer"),
    # issue 19: what calls and comprehensions produce
    ("'x'.join(['a' * 1000000] * 1000)", "str.join would make a value"),
    ("[x.upper() for x in ['a' * 1000000] * 10000]", "made more than 10000000 characters or items in all"),
    ("sum(len(x.split('a')) for x in ['a' * 1000000] * 10000)", "str.split would make a value"),
    ("sum(len(x.split('b')) for x in [big] * 10000)", "ran more than 0.5 CPU seconds"),
    ("sum([[1] * 1000000] * 100, [])", "sum\\(\\) would make a value of 100000000"),
    ("len([[1] * 1000000] * 100) + len([[1] * 1000000] * 100)", "^$"),
    ("any(t.count('b') > 0 for t in [big] * 10000)", "ran more than 0.5 CPU seconds"),
    ("len(str(list(big)))", "str\\(\\) would make a value"),
    ("text.expandtabs(10**6) and ('\\t' * 1000).expandtabs(10**6)", "str.expandtabs would make a value"),
])
def test_expression_bounds_fail_the_record_quickly(source: str, words: str) -> None:
    condition = Condition(source)
    outcome = run_in_a_child(lambda: condition.evaluate(STATE), what=source)  # a regressed bound: fails in 20 s
    if words == "^$":  # within the bounds, and quick: simpleeval's own walk of big lists is bounded too
        assert outcome.raised == () and outcome.message == "200", outcome
    else:
        assert "RecordError" in outcome.raised and re.search(words, outcome.message), outcome
    assert outcome.seconds < 5


def test_deeply_nested_expressions_are_config_errors() -> None:
    for source in ["not " * 100_000 + "x", "(" * 300 + "1" + ")" * 300, "-" * 5000 + "1"]:
        with pytest.raises(ValueError):
            Condition(source)


def test_a_bound_fails_one_record_and_the_run_goes_on(write_graph: object, tmp_path: Path) -> None:
    rows = [{"id": "big", "text": "abc", "width": 10**9}, {"id": "small", "text": "abc", "width": 5}]
    spec = {"name": "bounds",
            "nodes": {"keep": {"type": "filter", "when": "len(text.center(width)) > 0", "reason": "empty"}},
            "outputs": [{"name": "sft", "format": "sft",
                         "messages": [{"role": "user", "content": "{{ text * width }}"}]}]}
    path = write_graph(spec, rows)  # type: ignore[operator]
    result = synthloom.run(path, tmp_path / "out")
    written = [json.loads(line) for line in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert [record["messages"][0]["content"] for record in written] == ["abc" * 5]
    failed = [json.loads(line) for line in (tmp_path / "out" / "failed.jsonl").read_text().splitlines()]
    assert len(failed) == 1 and "str.center was given 1000000000" in json.dumps(failed[0])
    assert result.manifest["counts"]["failed"] == 1


def test_a_billion_laughs_graph_is_refused_in_a_moment(tmp_path: Path) -> None:
    lines = ["name: t", 'x-a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"x-{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    lines.append("nodes: {a: {type: sampler, slots: {x: *i}}}")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match="more than 200000 values once its aliases are expanded"):
        synthloom.load(path)
    assert time.monotonic() - started < 5


def test_a_critic_scale_that_would_allocate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "seed": {"source": {"type": "none", "rows": 1}},
                                    "nodes": {"judge": {"type": "critic", "field": "index",
                                                        "scale": [0, 2_000_000_000]}}}))
    assert_refused(cli("validate", path), "nodes.judge.scale: spans at most 100 steps")


@pytest.mark.parametrize("make", ["/dev/zero", "folder", "fifo"])
def test_seed_paths_that_are_not_files_are_refused(tmp_path: Path, make: str) -> None:
    import os
    target = make
    if make == "folder":
        (tmp_path / "rows").mkdir()
        target = "rows"
    elif make == "fifo":
        os.mkfifo(tmp_path / "pipe")
        target = "pipe"
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "seed": {"source": {"type": "jsonl", "path": target}},
                                    "nodes": {"keep": {"type": "filter", "when": "True", "reason": "x"}}}))
    assert_refused(cli("validate", path), "g.yaml:", ": seed.source.path: seed file")


# -- issue 19.2: every number a graph gives has a ceiling ----------------------------------------------

def _numeric_fields(model: type[BaseModel], prefix: str, seen: set[type]) -> Iterator[tuple[str, list[Any]]]:
    """(dotted name, constraints) of every int or float a graph can write into `model`, nested models and
    the items of lists, tuples and dicts included."""
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        yield from _numeric_leaves(field.annotation, list(field.metadata), f"{prefix}{name}", seen)


def _numeric_leaves(annotation: Any, constraints: list[Any], where: str,
                    seen: set[type]) -> Iterator[tuple[str, list[Any]]]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        more = [item for info in extra for item in (info.metadata if isinstance(info, FieldInfo) else [info])]
        yield from _numeric_leaves(base, constraints + more, where, seen)
    elif annotation in (int, float):
        yield where, constraints
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _numeric_fields(annotation, f"{where}.", seen)
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            yield from _numeric_leaves(option, constraints, where, seen)
    elif origin in (list, tuple, dict, set, frozenset):
        for item in typing.get_args(annotation):
            if item is not Ellipsis:
                yield from _numeric_leaves(item, [], f"{where}[]", seen)


def _has_ceiling(constraints: list[Any]) -> bool:
    return any(isinstance(item, (annotated_types.Le, annotated_types.Lt))
               or (isinstance(item, annotated_types.Interval) and (item.le is not None or item.lt is not None))
               for item in constraints)


def test_every_numeric_parameter_of_every_node_type_and_the_graph_has_a_ceiling() -> None:
    from synthloom.config.schema import GraphConfig
    from synthloom.graph.registry import node_type_names, resolve_node_type

    models: dict[str, type[BaseModel]] = {"graph": GraphConfig}
    models.update({f"nodes.<{name}>": resolve_node_type(name).Params for name in node_type_names()})
    assert len(models) > 10
    found: list[str] = []
    unbounded: list[str] = []
    for prefix, model in models.items():
        for where, constraints in _numeric_fields(model, f"{prefix}.", set()):
            found.append(where)
            if not _has_ceiling(constraints):
                unbounded.append(where)
    assert "nodes.<llm>.n" in found and "graph.run.max_in_flight" in found and "nodes.<dedup>.num_perm" in found
    assert "nodes.<sampler>.slots[].choices[]" in found
    assert unbounded == [], f"numeric parameters without a ceiling (add one in synthloom.config.ceilings): {unbounded}"


@pytest.mark.parametrize("node,words", [
    ({"type": "llm", "prompt": "hi", "n": 100000}, "nodes.make.n: Input should be less than or equal to 100"),
    ({"type": "dedup", "field": "text", "method": "minhash", "num_perm": 20000},
     "nodes.make.num_perm: Input should be less than or equal to 1024"),
    ({"type": "sampler", "mode": "cover", "slots": {"x": {"choices": {"a": 100000000}}}},
     "nodes.make.slots: slot 'x': a weight is at most 1000000"),
    ({"type": "sampler", "mode": "cover", "slots": {"x": {"choices": {"a": 600000, "b": 600000}}}},
     "the weights add up to at most 1000000"),
])
def test_a_parameter_past_its_ceiling_is_refused_by_validate(tmp_path: Path, node: dict[str, Any],
                                                              words: str) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "seed": {"source": {"type": "none", "rows": 1}},
                                    "models": {"default": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                           "model": "m"}},
                                    "nodes": {"make": node}}))
    assert_refused(cli("validate", path), words)


def test_max_in_flight_past_its_ceiling_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "seed": {"source": {"type": "none", "rows": 1}},
                                    "run": {"max_in_flight": 1_000_000_000},
                                    "nodes": {"keep": {"type": "filter", "when": "True", "reason": "x"}}}))
    assert_refused(cli("validate", path), "run.max_in_flight: Input should be less than or equal to 10000")


# -- issue 19.5: templates and conditions from a grammar, with large constants --------------------------

BIG_NUMBERS = st.sampled_from(["3", "100", "10**5", "10**6", "999999", "10**7", "10**9", "2**40", "4000000"])
STRINGS = st.sampled_from(["'a'", "'ab\\\\n'", "'\\\\t'", "'%s%s'", "'{0}{0}'", "text", "big", "question", "''"])


def _expressions(names: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Python-ish expressions both sandboxes parse: the allocating operators, str methods and builtins,
    nested, with numbers up to 2**40."""
    def grow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        method = st.sampled_from(["upper()", "split('a')", "split()", "center({n})", "ljust({n})", "zfill({n})",
                                  "expandtabs({n})", "replace('a', {s})", "replace('', {s})", "join({l})",
                                  "format({s})", "count('a')", "strip()", "splitlines()"])
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "*", "%", "**"]), st.one_of(inner, BIG_NUMBERS)).map(
                lambda parts: f"({parts[0]} {parts[1]} {parts[2]})"),
            st.tuples(inner, method, BIG_NUMBERS, inner).map(
                lambda parts: f"{parts[0]}.{parts[1].format(n=parts[2], s=parts[3], l=f'[{parts[3]}] * {parts[2]}')}"),
            st.tuples(st.sampled_from(["len", "str", "sum", "list", "max"]), inner).map(
                lambda parts: f"{parts[0]}({parts[1]})"),
            st.tuples(inner, BIG_NUMBERS).map(lambda parts: f"[{parts[0]}] * {parts[1]}"),
            st.tuples(inner, inner, BIG_NUMBERS).map(
                lambda parts: f"[{parts[0]} for x in [{parts[1]}] * {parts[2]}]"),
            st.tuples(inner, BIG_NUMBERS).map(lambda parts: f"sum([[{parts[0]}] * {parts[1]}] * {parts[1]}, [])"),
        )
    return st.recursive(st.one_of(names, BIG_NUMBERS), grow, max_leaves=6)


FILTERS = st.sampled_from(["indent({n}, true, true)", "join('-')", "center({n})", "format({n})", "wordwrap(1)",
                           "replace('a', 'bb')", "sort", "list", "unique|list", "reverse|list", "string", "e",
                           "tojson", "pprint", "batch({n}, 'x')|list", "slice({n})|list", "sum(start=[])",
                           "truncate({n})", "wordcount", "title"])


@st.composite
def _templates(draw: st.DrawFn) -> str:
    expression = draw(_expressions(STRINGS))
    chain = "".join("|" + draw(FILTERS).format(n=draw(BIG_NUMBERS)) for _ in range(draw(st.integers(0, 3))))
    body = f"{{{{ ({expression}){chain} }}}}"
    for _ in range(draw(st.integers(0, 2))):
        body = f"{{% for i in range({draw(BIG_NUMBERS)}) %}}{body}{{% endfor %}}"
    return body


def _check_bounded(run: Any, source: str) -> None:
    """A stranger's template or condition: renders, or fails the record with one message, in seconds and
    within 200 MB (measured in a child process, which a runaway render cannot hold for more than 20 s)."""
    outcome = run_in_a_child(run, what=source)
    assert outcome.raised == () or ("RecordError" in outcome.raised and "\n" not in outcome.message), (source, outcome)
    assert outcome.seconds < 10, (source, outcome)
    assert outcome.grown_kib < 200_000, (source, outcome)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(source=_templates())
def test_generated_templates_stay_bounded(source: str) -> None:
    try:
        template = Template(source)
    except ValueError:
        return
    _check_bounded(lambda: template.render(STATE), source)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(source=_expressions(st.sampled_from(["'a'", "'ab\\n'", "'\\t'", "text", "big", "question", "''"])))
def test_generated_conditions_stay_bounded(source: str) -> None:
    try:
        condition = Condition(source)
    except ValueError:
        return
    _check_bounded(lambda: condition.evaluate(STATE), source)


@pytest.mark.timeout(120)
async def test_a_costly_condition_holds_the_event_loop_a_slice_only_and_fails_its_record(
        write_graph: Any, tmp_path: Path) -> None:
    """Conditions run on the event loop: one that would take minutes (a scan of 10,000 copies of a 1 MB
    string; without the CPU budget about 500 s) stops at 0.5 CPU seconds, fails its record, and the other
    record is written."""
    from tests.test_novelty_index import heartbeat_gaps
    rows = [{"id": "slow", "big": "a" * 1_000_000, "n": 10_000}, {"id": "quick", "big": "a", "n": 1}]
    spec = {"name": "slow", "nodes": {"keep": {"type": "filter", "reason": "never",
                                               "when": "not any(t.count('b') > 0 for t in [big] * n)"}},
            "outputs": [{"name": "rows", "format": "raw", "fields": ["id"]}]}
    path = write_graph(spec, rows)  # type: ignore[operator]
    gaps = await heartbeat_gaps(synthloom.arun(path, tmp_path / "out"))
    written = [json.loads(line)["id"] for line in (tmp_path / "out" / "rows.jsonl").read_text().splitlines()]
    failed = [json.loads(line) for line in (tmp_path / "out" / "failed.jsonl").read_text().splitlines()]
    assert written == ["quick"] and [row["id"] for row in failed] == ["slow"]
    assert "ran more than 0.5 CPU seconds" in failed[0]["message"]
    assert max(gaps) < 5, max(gaps)  # the budget plus one bounded step, with room for a busy machine
