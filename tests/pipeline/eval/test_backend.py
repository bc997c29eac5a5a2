"""`aglora eval --backend`: every bad combination of the backend and its GGUF files is one line,
refused before any model loads (no llama-cpp-python needed: a missing one is itself a line)."""

from __future__ import annotations

import sys

import pytest

from tests.misuse.conftest import refused
from tests.tiny import FORGET, write_probe_file


def _argv(tmp_path, *extra: str) -> list[str]:
    probes = write_probe_file(tmp_path / "p.jsonl", [{**FORGET[0], "split": "forget"}])
    (tmp_path / "base.gguf").write_bytes(b"GGUF")
    (tmp_path / "lora.gguf").write_bytes(b"GGUF")
    return ["eval", "--probes", str(probes), "--out", str(tmp_path / "out"), *extra]


CASES = {
    "unknown": (["--backend", "vllm"], ["--backend 'vllm'", "torch or llama.cpp"]),
    "gguf without backend": (["--gguf-lora", "{d}/lora.gguf"],
                             ["--gguf-lora is a setting of --backend llama.cpp"]),
    "no base": (["--backend", "llama.cpp", "--gguf-lora", "{d}/lora.gguf"],
                ["needs --gguf-base"]),
    "both": (["--backend", "llama.cpp", "--gguf-base", "{d}/base.gguf", "--gguf-lora",
              "{d}/lora.gguf", "--gguf-merged", "{d}/lora.gguf"], ["not both"]),
    "relearn": (["--backend", "llama.cpp", "--gguf-base", "{d}/base.gguf", "--relearn", "5"],
                ["--relearn fine-tunes in PyTorch"]),
    "samples": (["--backend", "llama.cpp", "--gguf-base", "{d}/base.gguf", "--samples", "2"],
                ["greedily only"]),
    "missing": (["--backend", "llama.cpp", "--gguf-base", "{d}/nowhere.gguf"],
                ["--gguf-base", "no such file"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_backend_input_is_one_line(capsys, tmp_path, case):
    extra, fragments = CASES[case]
    refused(capsys, _argv(tmp_path, *(a.format(d=tmp_path) for a in extra)), *fragments)
    assert not (tmp_path / "out").exists()


def test_llama_cpp_python_missing_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError
    refused(capsys, _argv(tmp_path, "--backend", "llama.cpp", "--gguf-base",
                          str(tmp_path / "base.gguf")), "needs llama-cpp-python", "[llamacpp]")
    assert not (tmp_path / "out").exists()
