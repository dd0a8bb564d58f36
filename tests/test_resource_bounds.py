"""What a graph may cost: YAML aliases, templates, expressions and parameters that allocate are bounded.

A bound that trips fails that record (or the graph check) with a message saying which; the run goes on."""
from __future__ import annotations

import json
import time
from pathlib import Path

import jinja2
import pytest
import synthloom
import yaml
from synthloom.errors import ConfigError, RecordError
from synthloom.expressions import Condition
from synthloom.templates import Template

from tests.test_graph_trust import assert_refused, cli

STATE = {"question": "What is a tide?", "review": {"score": 4}, "text": "abc" * 1000}


@pytest.mark.parametrize("source,words", [
    ("{{ 'a' * 10**9 }}", "'*' would make a value of 1000000000"),
    ("{{ 2 ** (10**10) }}", "'**' would make an integer"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "loop iterations"),
    ("{% for a in text %}{% for b in text %}{% endfor %}{% endfor %}", "loop iterations"),
    ("{{ lipsum(10**6) }}", "lipsum is bounded"),
    ("{{ text|center(10**9) }}", "the center filter was given 1000000000"),
    ("{{ text.center(3 * 10**9) }}", "str.center was given 3000000000"),
    ("{{ '{:>999999999}'.format(1) }}", "names a width of 999999999"),
    ("{{ '%0999999999d' % 1 }}", "names a width"),
    ("{{ text|replace('', text) }}", "str.replace would make"),
    ("{% set a = text * 300 %}{% set b = a ~ a %}{{ b }}", "'~' would make"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}", "calls"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursed too deeply"),
    ("{% for i in range(99999) %}{{ text }}{% endfor %}", "rendered text longer than"),
    ("{{ range(10**7)|list }}", "MAX_RANGE"),
])
def test_template_bounds_fail_the_record_quickly(source: str, words: str) -> None:
    started = time.monotonic()
    template = Template(source)  # compiling folds no constant: 'a' * 10**9 is not evaluated here
    with pytest.raises(RecordError, match="template .*" + words.replace("*", r"\*").replace("(", r"\(")):
        template.render(STATE)
    assert time.monotonic() - started < 5


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
])
def test_expression_bounds_fail_the_record_quickly(source: str, words: str) -> None:
    started = time.monotonic()
    with pytest.raises(RecordError, match=words):
        Condition(source).evaluate(STATE)
    assert time.monotonic() - started < 5


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
