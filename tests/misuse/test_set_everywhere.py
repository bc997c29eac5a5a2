"""`--set` works wherever `--help` offers it, and an unknown key is an error there too (one line,
exit 2, before anything is written). The subcommands are read from the parser, so a new command
with `--set` is covered as soon as it has required arguments below."""

from __future__ import annotations

import argparse

import pytest

from aglora.cli import build_parser
from tests.misuse.conftest import refused, write_config


def _commands_with_set() -> list[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(name for name, p in sub.choices.items()
                  if any("--set" in a.option_strings for a in p._actions))


def _argv(command: str, tmp_path, concept_path) -> list[str]:
    out = str(tmp_path / "out")
    cfg = str(write_config(tmp_path, concept_path))
    probes = str(concept_path.parent / "probes.jsonl")
    return {
        "run": ["run", cfg, "--out", out],
        "forget": ["forget", str(concept_path), "--out", out],
        "suite": ["suite", "--concepts", str(concept_path), "--out", out],
        "eval": ["eval", "--probes", probes, "--out", out],
        "bench": ["bench", "src/aglora/data/configs/bench.yaml", "--out", out],
        "ban": ["ban", "--item", "The Matrix", "--out", out],
        "recommend": ["recommend", "--adapter", out, "I loved Alien."],
        **{s: [s, out] for s in ("record", "score", "mask", "train", "report")},
    }[command]


# `demo` runs the embedded model; its --set goes through the same load_config as `run`.
COMMANDS = [c for c in _commands_with_set() if c != "demo"]


def test_every_command_offering_set_is_covered():
    assert set(COMMANDS) >= {"run", "forget", "suite", "eval", "bench", "ban", "recommend",
                             "record", "score", "mask", "train", "report"}


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_set_key_is_an_error(capsys, tmp_path, concept_path, command):
    key = "recommend.no_such_key=1" if command == "recommend" else "no_such.key=1"
    refused(capsys, [*_argv(command, tmp_path, concept_path), "--set", key],
            "unknown config key", "no_such")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_set_value_is_an_error(capsys, tmp_path, concept_path, command):
    key = "recommend.n_samples=-1" if command == "recommend" else "train.lr=0"
    if command == "bench":
        key = "run.train.lr=0"
    refused(capsys, [*_argv(command, tmp_path, concept_path), "--set", key], "must be >")
    assert not (tmp_path / "out").exists()


def test_set_on_a_run_directory_eval_says_it_has_no_effect(capsys, tmp_path):
    refused(capsys, ["eval", str(tmp_path / "run"), "--set", "train.lr=1"],
            "--set has no effect on a run's eval stage")


def test_recommend_refuses_run_config_keys(capsys, tmp_path):
    refused(capsys, ["recommend", "--adapter", str(tmp_path), "x", "--set", "train.lr=1"],
            "reads only recommend.* settings")
