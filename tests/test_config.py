"""Run config: list settings from `--set`."""

from __future__ import annotations

from aglora.config import TrainConfig, load_config


def test_skip_leading_is_a_config_list():
    cfg = load_config(None, ["train.forget_skip_leading=The,A"])
    assert cfg.train.forget_skip_leading == ["The", "A"]
    assert TrainConfig().forget_skip_leading == []
