"""`aglora bench` (aglora.cli.bench): an unknown method is a clean error."""

from __future__ import annotations

from aglora.cli import main
from tests.bench.helpers import bench_yaml


def test_cli_bench_unknown_method_is_a_clean_error(tmp_path, concept_path, capsys):
    path = bench_yaml(tmp_path, concept_path)
    assert main(["bench", str(path), "--out", str(tmp_path / "o"), "--methods", "magic"]) == 2
    assert "--methods: 'magic' is not in the bench config" in capsys.readouterr().err
