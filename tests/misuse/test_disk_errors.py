"""Read-only and full disks, simulated (the tests run as root, who may write anywhere): every
command that writes an --out refuses a read-only one before it writes; every write failure of
`aglora.errors.DISK_ERRORS` (full disk, quota, read-only disk, no permission) is one line with
its fix and exit 2, from a run, a ban, a bench (also from its cells, in this process or in a
worker) and the controlled track; a lock file that cannot be written is one line too; and no
file is lost."""

from __future__ import annotations

import errno
import json
import os
import pickle

import pytest
import yaml

from aglora.cli import main
from aglora.errors import DISK_ERRORS
from tests.bench.helpers import bench_yaml
from tests.misuse.conftest import assert_nothing_lost, refused, snapshot, write_config

WRITERS = ["run", "forget", "suite", "eval", "bench", "controlled", "ban", "survey", "export"]


def _argv(command: str, tmp_path, concept_path, out) -> list[str]:
    """`command` writing into `out`, with inputs that pass every check before it."""
    missing = str(tmp_path / "no-such-model")  # the refusal must come before any model loads
    if command == "export":
        run_dir = tmp_path / "trained"
        (run_dir / "adapter").mkdir(parents=True, exist_ok=True)
        (run_dir / "adapter" / "adapter_config.json").write_text("{}")
        return ["export", str(run_dir), "--format", "peft", "--out", str(out)]
    return {
        "run": ["run", str(write_config(tmp_path, concept_path))],
        "forget": ["forget", str(concept_path), "--model", missing],
        "suite": ["suite", "--concepts", str(concept_path), "--model", missing],
        "eval": ["eval", "--probes", str(concept_path.parent / "probes.jsonl")],
        "bench": ["bench", str(bench_yaml(tmp_path, concept_path)), "--jobs", "1"],
        "controlled": ["controlled", "--model", missing],
        "ban": ["ban", "--item", "The Matrix", "--model", missing],
        "survey": ["recommend", "--survey", "--model", missing],
    }[command] + ["--out", str(out)]


@pytest.mark.parametrize("command", WRITERS)
def test_a_read_only_out_is_refused_by_every_command_before_it_writes(
        capsys, tmp_path, concept_path, monkeypatch, command):
    ro = tmp_path / "ro"
    ro.mkdir()
    argv = _argv(command, tmp_path, concept_path, ro / "out")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro)
                        else real_access(p, mode))
    before = snapshot(tmp_path)
    refused(capsys, argv, f"{ro} is not writable", "choose a writable --out")
    assert_nothing_lost(before, tmp_path)
    assert list(ro.iterdir()) == []


def _failing(real, code: int, name: str):
    """`real` (a writer taking the path first), failing with `code` for a path ending in `name`."""
    def write(path, *args, **kwargs):
        if str(path).endswith(name):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)
    return write


@pytest.mark.parametrize("code", sorted(DISK_ERRORS), ids=errno.errorcode.get)
def test_every_disk_error_is_one_line_with_its_fix(capsys, tmp_path, concept_path, monkeypatch,
                                                   code):
    import aglora.pipeline.run as run_mod
    monkeypatch.setattr(run_mod, "write_text", _failing(run_mod.write_text, code, "config.yaml"))
    out = tmp_path / "run"
    before = snapshot(tmp_path)
    refused(capsys, ["run", str(write_config(tmp_path, concept_path)), "--out", str(out)],
            f"aglora: error: {os.strerror(code)} writing {out / 'config.yaml'}; "
            f"{DISK_ERRORS[code]} and rerun the same command")
    assert_nothing_lost(before, tmp_path)


def test_a_full_disk_in_a_ban_or_the_controlled_track_is_one_line(capsys, tmp_path,
                                                                  monkeypatch):
    import aglora.controlled.track as track
    import aglora.recommend.ban as ban
    monkeypatch.setattr(ban, "write_json", _failing(ban.write_json, errno.ENOSPC, "ban.json"))
    monkeypatch.setattr(track, "write_json",
                        _failing(track.write_json, errno.ENOSPC, "catalogue.json"))
    missing = str(tmp_path / "no-such-model")
    before = snapshot(tmp_path)
    refused(capsys, ["ban", "--item", "The Matrix", "--model", missing, "--out",
                     str(tmp_path / "ban")], "No space left on device writing", "ban.json",
            "free some disk space and rerun the same command")
    refused(capsys, ["controlled", "--model", missing, "--out", str(tmp_path / "track")],
            "No space left on device writing", "catalogue.json", "free some disk space")
    assert_nothing_lost(before, tmp_path)


def test_a_lock_file_that_cannot_be_written_is_one_line(capsys, tmp_path, concept_path,
                                                        monkeypatch):
    import filelock

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(filelock.FileLock, "acquire", read_only)
    before = snapshot(tmp_path)
    for command in ("run", "bench"):
        refused(capsys, _argv(command, tmp_path, concept_path, tmp_path / command),
                "cannot write the lock file .aglora.lock (Read-only file system)",
                "choose a writable --out")
    assert_nothing_lost(before, tmp_path)


def test_a_full_disk_in_a_bench_worker_is_named_with_its_fix():
    from aglora.bench import pool
    # What a worker process sends back: the OSError, pickled.
    exc = pickle.loads(pickle.dumps(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/b/x.json")))
    assert pool._expected(exc)  # no traceback printed for it
    assert str(pool.cell_failure(["ag_lora seed 1"], exc)) == (
        "bench cell ag_lora seed 1 failed: No space left on device writing /b/x.json; free some "
        "disk space. The finished cells are kept: rerun the same command to finish the rest")


@pytest.mark.slow  # 3-9 s on 2 busy CPU cores: a two-cell bench, failing, then finished
def test_a_full_disk_in_a_bench_cell_keeps_the_finished_cells(capsys, tmp_path, concept_path,
                                                              tiny_dir, monkeypatch):
    import aglora.bench.pool as pool
    path = bench_yaml(tmp_path, concept_path, methods=["act_edit", "ag_lora"], seeds=1)
    raw = yaml.safe_load(path.read_text())
    raw["run"]["model"] = {"name_or_path": str(tiny_dir)}
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "bench"
    argv = ["bench", str(path), "--out", str(out), "--jobs", "1"]
    with monkeypatch.context() as m:
        m.setattr(pool, "write_json", _failing(pool.write_json, errno.ENOSPC,
                                               "ag_lora/seed0.json"))
        capsys.readouterr()
        assert main(argv) == 2
        printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    error = printed.err.strip().splitlines()[-1].split("\r")[-1]  # after the progress bars
    assert error.startswith("aglora: error: bench cell ag_lora seed 0 failed: No space left on "
                            "device writing "), error
    assert "; free some disk space. The finished cells are kept" in error
    kept = (out / "cells/act_edit/seed0.json").read_bytes()
    assert json.loads(kept)["label"] == "act_edit" and not (out / "cells/ag_lora/seed0.json"
                                                            ).exists()
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "act_edit seed 0: done before, skipped" in printed and "Traceback" not in printed
    assert (out / "cells/act_edit/seed0.json").read_bytes() == kept
    assert (out / "cells/ag_lora/seed0.json").is_file()
