"""Run folders (aglora.pipeline.run): a config saved by an earlier version reopens the same run."""

from __future__ import annotations

import pytest
import yaml

from aglora.errors import AgloraError


def test_run_from_an_earlier_version_is_the_same_run(tmp_path):
    # A config saved before a key existed (the key at its default now) reopens; a changed
    # value or a key that no longer exists is another run.

    from aglora.config import RunConfig, dump_config
    from aglora.pipeline.run import open_run
    out = tmp_path / "run"
    open_run(RunConfig(), out)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    del saved["eval"]["parallel_sides"]
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    open_run(RunConfig(), out)
    assert (out / "config.yaml").read_text() == dump_config(RunConfig())  # upgraded in place
    changed = RunConfig()
    changed.eval.n_samples += 1
    with pytest.raises(AgloraError, match=r"differs in eval\.n_samples"):
        open_run(changed, out)
    saved["eval"]["gone_key"] = 1
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(AgloraError, match=r"differs in eval\.gone_key"):
        open_run(RunConfig(), out)
