"""Shared pieces of the misuse tests: a tiny model saved to disk, a run config for it, and
checks that a refusal is one line with exit status 2 and that no file was lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from aglora.cli import main
from tests.tiny import make_model, make_tokenizer


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("misuse") / "tiny-model"
    make_model().save_pretrained(d)
    make_tokenizer().save_pretrained(d)
    return d


def write_config(tmp_path: Path, concept: Path, model_dir: Path | str | None = None,
                 name: str = "cfg.yaml", **sections) -> Path:
    """A small run config; `model_dir` None points at a model that does not exist, so any
    check that should come before the model loads is seen to do so."""
    cfg = {"name": "t", "concept": str(concept),
           "model": {"name_or_path": str(model_dir or tmp_path / "no-such-model")},
           "mask": {"k": 8}, "lora": {"rank": 2},
           "train": {"max_steps": 3, "batch_size": 2},
           "eval": {"include_tofu": False, "max_new_tokens": 6, "n_samples": 1}}
    for section, values in sections.items():
        cfg[section].update(values)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def refused(capsys, argv: list[str], *fragments: str) -> str:
    """Run the CLI; it must exit 2 with one `aglora: error:` line holding every fragment."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("aglora: error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def assert_nothing_lost(before: dict[str, str], root: Path) -> None:
    """Every file of `before` is still under `root`, byte for byte."""
    after = snapshot(root)
    lost = [k for k, v in before.items() if after.get(k) != v]
    assert not lost, f"lost or changed: {lost}"
