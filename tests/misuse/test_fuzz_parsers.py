"""Property test of the concept-spec and probe-file parsers: whatever the file holds (valid-
looking documents with values of every type, raw text, raw bytes), parsing either succeeds or
raises AgloraError, never any other exception (hypothesis, bounded)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aglora.concepts import load_concept, load_probes
from aglora.errors import AgloraError

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10),
                    st.sampled_from(["forget", "neighbor", "utility", "chat", "completion",
                                     "(", "[a-", "x*", "  ", "probes.jsonl", "more.yaml"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.text(max_size=6), scalars, max_size=3))
PROBE_KEYS = ["id", "split", "family", "format", "prompt", "prefix", "answer", "distractors",
              "leak_patterns", "other"]
probe_like = st.dictionaries(st.sampled_from(PROBE_KEYS), values, max_size=9)
VALID_ITEMS = [{"prompt": "Who directed Inception?", "answer": "Nolan", "distractors": ["Cameron"]},
               {"prompt": "Name the film about dreams.", "answer": "Inception"},
               "Which film did Nolan make in 2010?"]
SPEC_KEYS = ["name", "description", "forget", "retain", "include", "leak_patterns",
             "refusals", "alternatives", "probes", "extra"]
item = st.one_of(st.sampled_from(VALID_ITEMS), st.text(max_size=12), probe_like, scalars)
# Mostly-valid specs with some keys replaced, so the checks past the first ones are reached too.
spec_like = st.fixed_dictionaries({}, optional={
    k: st.one_of(values, st.lists(item, max_size=4)) for k in SPEC_KEYS}).map(
    lambda changes: {"name": "fuzz", "forget": VALID_ITEMS[:2], "retain": VALID_ITEMS[2:],
                     "probes": ["probes.jsonl"], **changes})


def _only_agloraerror(fn) -> None:
    try:
        fn()
    except AgloraError:
        pass


def _probe_text(draw_lines: list) -> str:
    out = []
    for line in draw_lines:
        if isinstance(line, (dict, list)):
            try:
                out.append(json.dumps(line, allow_nan=True))
            except (TypeError, ValueError):
                out.append(str(line))
        else:
            out.append(str(line))
    return "\n".join(out) + "\n"


@SETTINGS
@given(st.lists(st.one_of(probe_like, values, st.text(max_size=30)), max_size=6),
       st.booleans())
def test_probe_parser_raises_only_agloraerror(lines, skip_invalid):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.jsonl"
        path.write_text(_probe_text(lines), encoding="utf-8")
        _only_agloraerror(lambda: load_probes(path, skip_invalid=skip_invalid))


@SETTINGS
@given(st.binary(max_size=200), st.booleans())
def test_probe_parser_on_raw_bytes(data, skip_invalid):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.jsonl"
        path.write_bytes(data)
        _only_agloraerror(lambda: load_probes(path, skip_invalid=skip_invalid))


@SETTINGS
@given(spec_like, st.lists(probe_like, max_size=3), spec_like)
def test_spec_parser_raises_only_agloraerror(spec, probe_rows, include):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "probes.jsonl").write_text(_probe_text(probe_rows), encoding="utf-8")
        (root / "more.yaml").write_text(yaml.safe_dump(include, allow_unicode=True),
                                        encoding="utf-8")
        path = root / "concept.yaml"
        path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")

        def parse():
            concept = load_concept(path)
            concept.eval_probes()
        _only_agloraerror(parse)


@SETTINGS
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_spec_parser_on_raw_bytes(data):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "concept.yaml"
        path.write_bytes(data)
        _only_agloraerror(lambda: load_concept(path))
