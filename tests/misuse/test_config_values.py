"""Every run-config value is checked by type and range before anything runs: one line, exit 2,
the key and the allowed range named, nothing written or lost."""

from __future__ import annotations

import pytest
import torch

from aglora.errors import AgloraError
from tests.misuse.conftest import assert_nothing_lost, refused, snapshot, write_config

BAD_VALUES = [
    ("train.lr=0", "train.lr=0.0: must be > 0"),
    ("train.lr=-1e-3", "train.lr=-0.001: must be > 0"),
    ("train.lr=true", "expected a number, got True"),
    ("train.lr=.nan", "train.lr=nan: must be > 0"),
    ("train.max_steps=0", "train.max_steps=0: must be >= 1"),
    ("train.batch_size=0", "train.batch_size=0: must be >= 1"),
    ("score.batch_size=0", "score.batch_size=0: must be >= 1"),
    ("eval.batch_size=0", "eval.batch_size=0: must be >= 1"),
    ("train.check_every=0", "train.check_every=0: must be >= 1"),
    ("train.min_steps=-1", "train.min_steps=-1: must be >= 0"),
    ("train.min_steps=5", "train.min_steps=5 exceeds train.max_steps=3"),
    ("eval.n_samples=-1", "eval.n_samples=-1: must be >= 0"),
    ("eval.tofu_limit=-1", "eval.tofu_limit=-1: must be >= 0"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens=0: must be >= 1"),
    ("eval.temperature=0", "eval.temperature=0.0: must be > 0"),
    ("eval.sample_splits=[forgot]", "unknown split 'forgot'"),
    ("lora.alpha=0", "lora.alpha=0.0: must be > 0"),
    ("lora.rank=0", "lora.rank=0: must be at least 1"),
    ("mask.k=0", "mask.k=0: must be at least 1"),
    ("mask.k=true", "expected a number, got True"),
    ("mask.k=8.5", "expected an integer"),
    ("train.stop_accuracy=1.5", "train.stop_accuracy=1.5: must be in [0, 1]"),
    ("train.stop_accuracy=-0.1", "must be in [0, 1]"),
    ("train.validation_share=1", "train.validation_share=1.0: must be in [0, 1)"),
    ("train.validation_share=-0.5", "must be in [0, 1)"),
    ("model.device=gpu", "model.device='gpu': unknown device"),
    ("model.dtype=int8", "model.dtype='int8'"),
    ("train.lr=[1,", "is not valid YAML"),
    ("train.learning_rate=1", "unknown config key 'train.learning_rate'"),
    ("nosuchsection.x=1", "unknown config key 'nosuchsection'"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES,
                         ids=[o for o, _ in BAD_VALUES])
def test_bad_config_value_is_refused_before_anything_is_written(capsys, tmp_path, concept_path,
                                                                 override, message):
    cfg = write_config(tmp_path, concept_path)
    before = snapshot(tmp_path)
    refused(capsys, ["run", str(cfg), "--out", str(tmp_path / "run"), "--set", override],
            message)
    assert not (tmp_path / "run").exists()
    assert_nothing_lost(before, tmp_path)


def test_the_range_checks_hold_for_every_builder():
    # The dataclasses check themselves: a config built in Python is refused the same way.
    from aglora.bench.config import BenchEvalConfig, BenchSettings
    from aglora.config import EvalConfig, LoraConfig, TrainConfig
    from aglora.recommend.settings import RecConfig
    for make in (lambda: TrainConfig(lr=0), lambda: TrainConfig(max_steps=2, min_steps=3),
                 lambda: EvalConfig(n_samples=-1), lambda: LoraConfig(alpha=-1),
                 lambda: RecConfig(n_samples=-1), lambda: RecConfig(temperature=0),
                 lambda: BenchSettings(seeds=0), lambda: BenchEvalConfig(relearn_lr=0)):
        with pytest.raises(AgloraError, match="must be|exceeds"):
            make()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_on_a_machine_without_it_is_refused_before_the_model_loads(capsys, tmp_path,
                                                                        concept_path):
    cfg = write_config(tmp_path, concept_path, model={"device": "cuda"})
    refused(capsys, ["run", str(cfg), "--out", str(tmp_path / "run")],
            "model.device='cuda': no CUDA device here", "use model.device=cpu")
    assert not (tmp_path / "run" / "activations.safetensors").exists()


def test_standalone_eval_refuses_negative_samples_and_relearn(capsys, tmp_path, concept_path):
    probes = concept_path.parent / "probes.jsonl"
    refused(capsys, ["eval", "--probes", str(probes), "--out", str(tmp_path / "o"),
                     "--samples", "-1"], "--samples -1: must be 0 or more")
    refused(capsys, ["eval", "--probes", str(probes), "--out", str(tmp_path / "o"),
                     "--relearn", "-2"], "--relearn -2")
    refused(capsys, ["eval", "--probes", str(probes), "--out", str(tmp_path / "o"),
                     "--relearn", "3"], "--relearn needs --adapter")
    assert not (tmp_path / "o").exists()


def test_bench_jobs_and_seeds_zero_are_refused(capsys, tmp_path):
    bench = "src/aglora/data/configs/bench.yaml"
    refused(capsys, ["bench", bench, "--out", str(tmp_path / "b"), "--jobs", "0"],
            "--jobs 0: need at least 1")
    refused(capsys, ["bench", bench, "--out", str(tmp_path / "b"), "--seeds", "0"],
            "--seeds 0: need at least 1")
    refused(capsys, ["bench", bench, "--out", str(tmp_path / "b"), "--set", "seeds=0"],
            "seeds=0: must be >= 1")
    assert not (tmp_path / "b").exists()


def test_ban_settings_are_range_checked(capsys, tmp_path):
    refused(capsys, ["ban", "--item", "The Matrix", "--out", str(tmp_path / "r"),
                     "--set", "recommend.n_samples=-1"], "recommend.n_samples=-1: must be >= 0")
    refused(capsys, ["ban", "--item", "The Matrix", "--out", str(tmp_path / "r"),
                     "--set", "recommend.temperature=[0,"], "is not valid YAML")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--real-world", "-1"], "real_world_limit=-1: must be >= 0"),
    (["--lora-lr", "0"], "method.lora_lr=0.0: must be > 0"),
    (["--full-lr", "-1"], "method.full_lr=-1.0: must be > 0"),
    (["--steps", "0"], "steps, batch_size, k and rank must be >= 1"),
    (["--implant-lr", "0"], "lr > 0"),
])
def test_controlled_track_settings_are_range_checked(tmp_path, argv, message):
    # Only the settings are built here: a valid command line would load the embedded model.
    from aglora.cli import build_parser
    from aglora.cli.controlled import config_from_args
    args = build_parser().parse_args(["controlled", "--out", str(tmp_path / "c"), *argv])
    with pytest.raises(AgloraError, match=message.replace(".", r"\.").replace("(", r"\(")):
        config_from_args(args)
