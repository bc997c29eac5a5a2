"""`aglora controlled` (aglora.cli.controlled) rejects bad inputs."""

from __future__ import annotations

from pathlib import Path

from aglora import cli


def test_cli_rejects_bad_inputs(tmp_path, capsys):
    assert cli.main(["controlled", "--out", str(tmp_path), "--methods", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert cli.main(["controlled", "--out", str(tmp_path), "--forget", "0"]) == 2
    assert "n_forget=0" in capsys.readouterr().err
    assert not any(Path(tmp_path).iterdir())
