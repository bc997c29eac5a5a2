"""Output directories: a file or a read-only folder as --out, --force that deletes only aglora's
own files, a standalone evaluation aimed at a run directory, and one process per directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from aglora.errors import AgloraError
from aglora.pipeline.run import prepare_run_dir
from aglora.runtime.lock import release_all
from tests.misuse.conftest import assert_nothing_lost, refused, snapshot, write_config


def _fake_run(run_dir, config_text="name: other\n"):
    """A directory holding another run: aglora's files only."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config_text)
    (run_dir / "state.json").write_text('{"finished": {"record": true}}\n')
    (run_dir / "metrics.json").write_text("{}\n")
    (run_dir / "adapter").mkdir()
    (run_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
    (run_dir / "figures").mkdir()
    (run_dir / "figures" / "families.png").write_bytes(b"png")
    return run_dir


def test_out_is_a_file(capsys, tmp_path, concept_path):
    (tmp_path / "taken").write_text("mine")
    cfg = write_config(tmp_path, concept_path)
    before = snapshot(tmp_path)
    refused(capsys, ["run", str(cfg), "--out", str(tmp_path / "taken")],
            "is a file, not a directory", "choose another --out")
    refused(capsys, ["run", str(cfg), "--out", str(tmp_path / "taken" / "sub")],
            "is a file, not a directory")
    refused(capsys, ["eval", "--probes", str(concept_path.parent / "probes.jsonl"), "--out",
                     str(tmp_path / "taken")], "is a file, not a directory")
    assert_nothing_lost(before, tmp_path)


def test_out_is_read_only(capsys, tmp_path, concept_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = write_config(tmp_path, concept_path)
    real_access = os.access
    # root may write anywhere, so the read-only folder is simulated where the test runs as root
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(ro)
                        else real_access(p, mode))
    refused(capsys, ["run", str(cfg), "--out", str(ro / "run")], "is not writable (read-only)")
    refused(capsys, ["run", str(cfg), "--out", str(ro)], "is not writable (read-only)")
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_is_read_only_for_real(capsys, tmp_path, concept_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused(capsys, ["run", str(write_config(tmp_path, concept_path)), "--out",
                         str(ro / "run")], "is not writable")
    finally:
        ro.chmod(0o755)


def test_force_refuses_a_run_directory_holding_other_files(capsys, tmp_path, concept_path):
    run_dir = _fake_run(tmp_path / "run")
    (run_dir / "notes.txt").write_text("my notes")
    cfg = write_config(tmp_path, concept_path)
    before = snapshot(tmp_path)
    err = refused(capsys, ["run", str(cfg), "--out", str(run_dir), "--force"],
                  "holds files aglora did not write (notes.txt)", "--force deletes only",
                  "config.yaml, state.json")
    assert "adapter/" in err and "report.*" in err
    assert_nothing_lost(before, tmp_path)


def test_without_force_the_refusal_says_what_force_deletes(capsys, tmp_path, concept_path):
    run_dir = _fake_run(tmp_path / "run")
    before = snapshot(tmp_path)
    refused(capsys, ["run", str(write_config(tmp_path, concept_path)), "--out", str(run_dir)],
            "holds another run", "pass --force to overwrite it (it deletes config.yaml")
    assert_nothing_lost(before, tmp_path)


def test_force_deletes_only_aglora_files(capsys, tmp_path, concept_path):
    run_dir = _fake_run(tmp_path / "run")
    cfg = write_config(tmp_path, concept_path)
    # The new run starts, then stops at the model load (no such model): the old run is gone.
    refused(capsys, ["run", str(cfg), "--out", str(run_dir), "--force"], "no-such-model")
    left = sorted(p.name for p in run_dir.iterdir())
    assert "metrics.json" not in left and "adapter" not in left and "figures" not in left
    assert "name: t" in (run_dir / "config.yaml").read_text()


def test_bad_inputs_with_force_delete_nothing(capsys, tmp_path, concept_path):
    run_dir = _fake_run(tmp_path / "run")
    (concept_path.parent / "probes.jsonl").write_text("not json\n")
    before = snapshot(tmp_path)
    refused(capsys, ["run", str(write_config(tmp_path, concept_path)), "--out", str(run_dir),
                     "--force"], "malformed JSON")
    assert_nothing_lost(before, tmp_path)


def test_force_on_a_folder_without_a_run(capsys, tmp_path, concept_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    before = snapshot(tmp_path)
    refused(capsys, ["run", str(write_config(tmp_path, concept_path)), "--out", str(folder),
                     "--force"], "holds no aglora run (cat.jpg)", "never these")
    assert_nothing_lost(before, tmp_path)


def test_ban_force_keeps_foreign_files(tmp_path):
    out = _fake_run(tmp_path / "ban")
    (out / "ban.json").write_text("{}")
    (out / "thesis.tex").write_text("chapter 1")
    before = snapshot(tmp_path)
    with pytest.raises(AgloraError, match=r"thesis\.tex.*--force deletes only"):
        prepare_run_dir(out, same_run=False, force=True, what="ban")
    assert_nothing_lost(before, tmp_path)
    release_all()


def test_standalone_eval_refuses_a_run_directory_as_out(capsys, tmp_path, concept_path):
    run_dir = _fake_run(tmp_path / "run")
    before = snapshot(tmp_path)
    refused(capsys, ["eval", "--probes", str(concept_path.parent / "probes.jsonl"), "--out",
                     str(run_dir)], "holds a run (config.yaml)", "choose another --out")
    assert_nothing_lost(before, tmp_path)


HOLDER = """
import sys, time
from pathlib import Path
from aglora.runtime.lock import lock_dir
lock_dir(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(60)
"""


def test_second_process_on_the_same_out_is_refused_with_the_holder_pid(capsys, tmp_path,
                                                                       concept_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = write_config(tmp_path, concept_path)
        start = time.time()
        refused(capsys, ["run", str(cfg), "--out", str(run_dir)],
                f"in use by another aglora process (PID {holder.pid})")
        assert time.time() - start < 10  # at once, not after waiting
        refused(capsys, ["eval", "--probes", str(concept_path.parent / "probes.jsonl"),
                         "--out", str(run_dir)], f"PID {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone the directory is free again (an OS lock is never stale).
    refused(capsys, ["run", str(write_config(tmp_path, concept_path)), "--out", str(run_dir)],
            "no-such-model")
