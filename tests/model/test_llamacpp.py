"""llama.cpp through llama-cpp-python (aglora.model.llamacpp) against PyTorch on tiny models
written as GGUF in code: with F32 weights the two runtimes differ only by their kernels, so
option scores, greedy answers, KL and NLL agree closely, for the base, the base with the LoRA
GGUF, and the merged GGUF. Marked `llamacpp` (make test-llamacpp installs llama-cpp-python)."""

from __future__ import annotations

import pytest
import torch

from aglora.cli import main
from aglora.model import llamacpp as lc
from aglora.model.adapter import adapter_disabled
from aglora.model.decode import generate
from aglora.model.likelihood import continuation_nll, score_options_with_lengths
from aglora.pipeline.eval.sides import kl_between
from tests.export.tiny_gguf import make_gguf_run, tiny_gguf
from tests.tiny import labelled_probes, make_tokenizer

pytestmark = pytest.mark.llamacpp
pytest.importorskip("llama_cpp")

ATOL = 1e-3  # nats: summed log-probs of a few tokens; measured below 1e-4 on these models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(base GGUF, LoRA GGUF, merged f32 GGUF, the adapted PyTorch model, probes)."""
    d = tmp_path_factory.mktemp("llamacpp")
    base = tiny_gguf(d / "base.gguf")
    run_dir, pm = make_gguf_run(d / "run", base)
    for fmt, name, extra in (("gguf-lora", "lora.gguf", []),
                             ("gguf", "merged.gguf", ["--quant", "f32"])):
        assert main(["export", str(run_dir), "--format", fmt, "--out", str(d / name),
                     *extra]) == 0
    return base, d / "lora.gguf", d / "merged.gguf", pm, labelled_probes()


def _close(got: list[list[float]], want: list[list[float]]) -> None:
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(torch.tensor(g), torch.tensor(w), atol=ATOL, rtol=0)


def test_base_scores_match_pytorch(tiny):
    base, _, _, pm, probes = tiny
    tok = make_tokenizer()
    got, got_len = lc.score_options(lc.LlamaCpp(base), tok, probes)
    with adapter_disabled(pm):
        want, want_len = score_options_with_lengths(pm, tok, probes)
    assert got_len == want_len
    _close(got, want)


@pytest.mark.parametrize("after", ["lora", "merged"])
def test_the_adapted_gguf_matches_the_peft_adapter(tiny, after):
    base, lora, merged, pm, probes = tiny
    tok = make_tokenizer()
    runner = lc.LlamaCpp(base, lora) if after == "lora" else lc.LlamaCpp(merged)
    got, _ = lc.score_options(runner, tok, probes)
    want, _ = score_options_with_lengths(pm, tok, probes)
    _close(got, want)
    with adapter_disabled(pm):
        base_scores, _ = score_options_with_lengths(pm, tok, probes)
    assert max(abs(a - b) for s, t in zip(want, base_scores, strict=True)
               for a, b in zip(s, t, strict=True)) > 10 * ATOL  # the adapter changes them
    agreement = lc.compare(runner, pm, tok, probes)
    assert agreement["top1_agreement"] == 1.0 and agreement["choice_agreement"] == 1.0
    assert agreement["option_logprob_gap"] < ATOL and agreement["next_token_logprob_gap"] < ATOL


@torch.no_grad()
def _assert_pytorch_argmax(runner, pm, tok, probe, stops) -> None:
    """Each token of llama.cpp's greedy answer is PyTorch's argmax on that prefix within ATOL
    (a random tiny model has near-ties that the two runtimes' rounding breaks either way)."""
    from aglora.model.decode import generation_context
    from aglora.model.tokens import context_ids
    ids = context_ids(tok, probe, generation_context(tok, probe))
    new = lc.greedy_ids(runner, ids, 8, stops)
    logits = pm(input_ids=torch.tensor([ids + new])).logits[0, len(ids) - 1:]
    for k, token in enumerate(new):
        assert logits[k, token] >= logits[k].max() - ATOL, (probe.id, k)


def test_greedy_answers_kl_and_nll_match_pytorch(tiny):
    base, lora, _, pm, probes = tiny
    tok = make_tokenizer()
    runner, base_runner = lc.LlamaCpp(base, lora), lc.LlamaCpp(base)
    stops = lc.stop_ids(pm, tok)
    got = lc.generate_greedy(runner, tok, probes, 8, stops)
    want = [g[:1] for g in generate(pm, tok, probes, 0, max_new_tokens=8)]
    assert sum(g == w for g, w in zip(got, want, strict=True)) >= len(probes) - 1
    for p in probes:
        _assert_pytorch_argmax(runner, pm, tok, p, stops)
    want_kl = kl_between(pm, pm, tok, probes, batch_size=4, parallel=False)
    assert abs(lc.kl_between(runner, base_runner, tok, probes) - want_kl) < 1e-4
    texts = [g[0] for g in got]
    want_nll = continuation_nll(pm, tok, probes, texts)
    for g, w in zip(lc.continuation_nll(runner, tok, probes, texts), want_nll, strict=True):
        assert g == pytest.approx(w, abs=1e-4) or (g != g and w != w)


def test_eval_backend_llamacpp_gives_the_pytorch_metrics(capsys, tmp_path, tiny):
    """`aglora eval --backend llama.cpp` writes metrics.json as the torch backend does (greedy
    only: --samples 0 there), with the agreement of each side."""
    import json

    from tests.tiny import write_probe_file
    base, lora, _, _, probes = tiny
    run_dir = base.parent / "run"
    probe_file = write_probe_file(tmp_path / "p.jsonl", [p.to_dict() for p in probes])
    common = ["eval", "--probes", str(probe_file), "--adapter", str(run_dir), "--base",
              str(base), "--set", "eval.max_new_tokens=8"]
    assert main([*common, "--samples", "0", "--out", str(tmp_path / "torch")]) == 0
    assert main([*common, "--backend", "llama.cpp", "--gguf-base", str(base), "--gguf-lora",
                 str(lora), "--out", str(tmp_path / "cpp")]) == 0
    want, got = (json.loads((tmp_path / d / "metrics.json").read_text())
                 for d in ("torch", "cpp"))
    for split in ("forget", "neighbor"):
        w, g = want["splits"][split], got["splits"][split]
        assert g["n_known"] == w["n_known"]
        assert g["known_accuracy"]["after"] == w["known_accuracy"]["after"]
        assert g["leak_rate"] == pytest.approx(w["leak_rate"], nan_ok=True)
        assert g["margin"]["after"] == pytest.approx(w["margin"]["after"], abs=ATOL)
    assert got["kl_neighbor"] == pytest.approx(want["kl_neighbor"], abs=1e-4)
    assert set(want) - set(got) <= {"base_eval_cached"}  # the same schema, plus `backend`
    backend = got["backend"]
    assert backend["name"] == "llama.cpp" and backend["gguf_lora"] == str(lora)
    assert backend["agreement"]["after"]["top1_agreement"] == 1.0
    assert backend["agreement"]["base"]["top1_agreement"] == 1.0
    rows = [json.loads(x) for x in (tmp_path / "cpp" / "probe_results.jsonl").open()]
    assert len(rows) == len(probes) and rows[0]["after_generations"]
