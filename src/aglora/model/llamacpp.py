"""Scores and greedy answers from llama.cpp (llama-cpp-python), on the same token ids as PyTorch.

`LlamaCpp` opens a GGUF model in llama-cpp-python, with a LoRA GGUF applied at scale 1 when one
is given (what `llama-cli -m BASE --lora ADAPTER` runs), and gives the logits after every token
of a sequence (`logits_all`). On it, the measurements of an evaluation side: `score_options`
(the summed log-prob of [answer, *distractors] after a probe's context, as
`aglora.model.likelihood` computes it), `generate_greedy` (`greedy_ids` per prompt),
`kl_between` (KL(base || model) per content token, as `aglora.pipeline.eval.sides.kl_between`),
`continuation_nll`; `compare`, the agreement of a llama.cpp model with a PyTorch one on the
probes (top-1 next token after each probe's context, the gaps between their log-probs); and
`measure_sides`, all of it for the base and after sides of an evaluation, which `aglora eval
--backend llama.cpp` turns into metrics.json.

Layer: model parts (beside `likelihood` and `decode`, its PyTorch counterparts), so that the
standalone evaluation (`aglora.pipeline.eval.standalone`) can call it; the metrics themselves
stay in `aglora.pipeline.eval.metrics`, shared with the PyTorch backend.

Choices. Token ids come from the run's Hugging Face tokenizer (`aglora.model.tokens`), never
from llama.cpp's own, so both runtimes score the same sequences and every difference is the
runtime's (quantized weights, kernels), not the tokenization's. A probe's context runs once and
each option continues it from the KV cache (llama-cpp-python's `eval` drops the cached tokens
past `n_tokens`). Generation is greedy only: seeded samples from another runtime would not
repeat PyTorch's draws, so leak rates here are over greedy generations. Log-softmax is taken in
float64. One probe at a time, no batching: simple, and fast enough for a 135M model on a CPU.
llama-cpp-python is an optional dependency (`pip install -e '.[llamacpp]'`, built from source);
without it every entry point is one AgloraError naming the install.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aglora.concepts import Probe
from aglora.config import EvalConfig
from aglora.errors import AgloraError
from aglora.model.adapter import adapter_disabled
from aglora.model.decode import _stop_ids, generation_context
from aglora.model.likelihood import choice_correct, score_options_with_lengths
from aglora.model.tokens import context_ids, context_text, encode, target_ids

INSTALL = "pip install -e '.[llamacpp]' (or make test-llamacpp; it builds llama.cpp: minutes)"


def llama_cpp_module():
    """The llama_cpp package; missing, an AgloraError naming the install."""
    try:
        import llama_cpp
    except ImportError:
        raise AgloraError(f"--backend llama.cpp needs llama-cpp-python: {INSTALL}") from None
    return llama_cpp


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


class LlamaCpp:
    """A GGUF model (and optional LoRA GGUF) in llama-cpp-python, logits at every position."""

    def __init__(self, model_path: Path, lora_path: Path | None = None, n_ctx: int = 512,
                 n_threads: int | None = None):
        llama_cpp = llama_cpp_module()
        for path in (model_path, lora_path):
            if path is not None and not Path(path).is_file():
                raise AgloraError(f"GGUF file {path} not found")
        self.model_path, self.lora_path, self.n_ctx = Path(model_path), lora_path, n_ctx
        threads = n_threads or torch.get_num_threads() or os.cpu_count() or 1
        try:
            with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
                self.llm = llama_cpp.Llama(
                    model_path=str(model_path), lora_path=str(lora_path) if lora_path else None,
                    n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=threads,
                    n_threads_batch=threads, logits_all=True, seed=0, verbose=False)
        except (ValueError, RuntimeError) as exc:
            what = f"{model_path} with the LoRA {lora_path}" if lora_path else str(model_path)
            raise AgloraError(f"llama.cpp could not load {what} ({str(exc).splitlines()[0]}); "
                              "give a llama.cpp model GGUF (and a LoRA GGUF made for it: aglora "
                              "export RUN --format gguf-lora)") from None

    def describe(self) -> str:
        return str(self.model_path) + (f" + LoRA {self.lora_path}" if self.lora_path else "")

    def _eval(self, ids: list[int], prefix: int) -> None:
        """Run `ids` after the first `prefix` of them, which the KV cache holds from the
        previous call (its sequence must have begun with them)."""
        if len(ids) > self.n_ctx:
            raise AgloraError(f"a sequence of {len(ids)} tokens does not fit llama.cpp's context "
                              f"of {self.n_ctx}; shorten the probe")
        llm = self.llm
        if prefix == 0:
            llm.reset()
        else:
            assert llm.n_tokens >= prefix and list(llm.input_ids[:prefix]) == list(ids[:prefix])
            llm.n_tokens = prefix
        if len(ids) > prefix:
            llm.eval(ids[prefix:])

    def logits(self, ids: list[int], prefix: int = 0, start: int = 0) -> np.ndarray:
        """Logits [len(ids) - start, vocab] after each token of `ids` from `start` on
        (`prefix`: as in `_eval`)."""
        self._eval(ids, prefix)
        return np.array(self.llm.scores[start: len(ids)], dtype=np.float32)

    def last_logits(self, ids: list[int], prefix: int = 0) -> np.ndarray:
        """Logits [vocab] after the last token of `ids`."""
        self._eval(ids, prefix)
        return np.array(self.llm.scores[len(ids) - 1], dtype=np.float32)


def context_size(tok, probes: list[Probe], max_new_tokens: int) -> int:
    """A llama.cpp context that holds every sequence of the evaluation (a multiple of 256)."""
    longest = 1
    for p in probes:
        ctx = context_text(tok, p)
        n = len(context_ids(tok, p, ctx))
        longest = max(longest, n + max([len(target_ids(tok, ctx, t))
                                        for t in [p.answer or "", *p.distractors]]))
        longest = max(longest, len(context_ids(tok, p, generation_context(tok, p)))
                      + max_new_tokens)
    return 256 * math.ceil((longest + 8) / 256)


def _options(tok, probe: Probe) -> tuple[list[int], list[list[int]]]:
    ctx = context_text(tok, probe)
    return context_ids(tok, probe, ctx), [target_ids(tok, ctx, o)
                                          for o in [probe.answer, *probe.distractors]]


def option_logprobs(runner: LlamaCpp, ctx: list[int], options: list[list[int]]) -> list[float]:
    """Summed log-prob of each option after `ctx`; the context runs once."""
    first = log_softmax(runner.last_logits(ctx))
    out = []
    for opt in options:
        if not opt:
            out.append(0.0)
            continue
        total = float(first[opt[0]])
        if len(opt) > 1:
            rows = log_softmax(runner.logits(ctx + opt[:-1], prefix=len(ctx), start=len(ctx)))
            total += float(sum(rows[j, opt[j + 1]] for j in range(len(opt) - 1)))
        out.append(total)
    return out


def score_options(runner: LlamaCpp, tok, probes: list[Probe]
                  ) -> tuple[list[list[float]], list[list[int]]]:
    """(summed log-probs, token counts) of [answer, *distractors] for each probe with a choice
    ([] for the others), as `aglora.model.likelihood.score_options_with_lengths`."""
    scores: list[list[float]] = [[] for _ in probes]
    lengths: list[list[int]] = [[] for _ in probes]
    for i, p in enumerate(probes):
        if p.has_choice:
            ctx, options = _options(tok, p)
            scores[i] = option_logprobs(runner, ctx, options)
            lengths[i] = [len(o) for o in options]
    return scores, lengths


def stop_ids(model: nn.Module, tok) -> list[int]:
    """The tokens that end a generation (the PyTorch model's, so both runtimes stop alike)."""
    return _stop_ids(model, tok)


def greedy_ids(runner: LlamaCpp, ids: list[int], max_new_tokens: int, stops: list[int]
               ) -> list[int]:
    """The greedy continuation of `ids` (at most `max_new_tokens`, the stop token excluded), as
    `aglora.model.decode` decodes: argmax at each step, every step continuing the KV cache."""
    new: list[int] = []
    logits = runner.last_logits(ids)
    while True:
        token = int(np.argmax(logits))
        if token in stops:
            return new
        new.append(token)
        if len(new) >= max_new_tokens:
            return new
        logits = runner.last_logits(ids + new, prefix=len(ids) + len(new) - 1)


def generate_greedy(runner: LlamaCpp, tok, probes: list[Probe], max_new_tokens: int,
                    stops: list[int], mask: list[bool] | None = None) -> list[list[str]]:
    """[greedy continuation] per probe where `mask` says (else []), decoded as
    `aglora.model.decode.generate` decodes (special tokens cut, stripped)."""
    out: list[list[str]] = [[] for _ in probes]
    for i, p in enumerate(probes):
        if mask is None or mask[i]:
            new = greedy_ids(runner, context_ids(tok, p, generation_context(tok, p)),
                             max_new_tokens, stops)
            out[i] = [tok.decode(new, skip_special_tokens=True).strip()]
    return out


def _rows(tok, probe: Probe, target: str, context: str | None = None):
    """(token ids, target positions, content positions) of one encoded probe."""
    b = encode(tok, [probe], [target], contexts=None if context is None else [context])
    n = int(b.attention_mask[0].sum())
    return (b.input_ids[0, :n].tolist(), b.target_mask[0, :n].bool().numpy(),
            b.content_mask[0, :n].bool().numpy())


def kl_between(runner: LlamaCpp, base: LlamaCpp, tok, probes: list[Probe]) -> float:
    """Mean KL(base || model) per content token over the probes' context+answer sequences."""
    if not probes:
        return float("nan")
    total, count = 0.0, 0
    for p in probes:
        ids, _, content = _rows(tok, p, p.answer or "")
        logp = log_softmax(runner.logits(ids)[content])
        base_logp = log_softmax(base.logits(ids)[content])
        total += float((np.exp(base_logp) * (base_logp - logp)).sum())
        count += int(content.sum())
    return total / max(count, 1)


def continuation_nll(runner: LlamaCpp, tok, probes: list[Probe], texts: list[str]
                     ) -> list[float]:
    """Mean NLL per token of each text after its probe's generation context (NaN if empty)."""
    out = []
    for p, text in zip(probes, texts, strict=True):
        ids, target, _ = _rows(tok, p, text, generation_context(tok, p))
        if not target.any():
            out.append(float("nan"))
            continue
        logp = log_softmax(runner.logits(ids)[target])
        nxt = np.asarray(ids[1:] + [0])[target]
        out.append(float(-logp[np.arange(len(nxt)), nxt].sum() / len(nxt)))
    return out


@torch.no_grad()
def _torch_next(model: nn.Module, ids: list[int]) -> np.ndarray:
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1]
    return log_softmax(logits.float().cpu().numpy())


def compare(runner: LlamaCpp, model: nn.Module, tok, probes: list[Probe],
            base_side: bool = False, cpp_scores: list[list[float]] | None = None) -> dict:
    """How close llama.cpp comes to PyTorch on the probes: the share of probe contexts where
    both give the same top-1 next token; the mean |log-prob gap| of PyTorch's top-1 token
    there; and over the options of the choice probes, the mean |gap| and mean signed gap
    (llama.cpp - PyTorch) of their summed log-probs, and the share of probes whose choice
    (answer beats every distractor, or not) agrees. `base_side`: PyTorch with its adapter
    disabled; `cpp_scores`: `score_options(runner, ...)` when already computed."""
    agree, token_gaps = [], []
    with adapter_disabled(model) if base_side else contextlib.nullcontext():
        for p in probes:
            ids = context_ids(tok, p, context_text(tok, p))
            want = _torch_next(model, ids)
            got = log_softmax(runner.last_logits(ids))
            top = int(np.argmax(want))
            agree.append(float(top == int(np.argmax(got))))
            token_gaps.append(abs(float(got[top] - want[top])))
        torch_scores, _ = score_options_with_lengths(model, tok, probes)
    if cpp_scores is None:
        cpp_scores, _ = score_options(runner, tok, probes)
    gaps = [c - t for cs, ts in zip(cpp_scores, torch_scores, strict=True)
            for c, t in zip(cs, ts, strict=True)]
    choice = [float(choice_correct(c) == choice_correct(t))
              for c, t in zip(cpp_scores, torch_scores, strict=True) if len(c) > 1]
    return {"n_contexts": len(agree), "top1_agreement": _mean(agree),
            "next_token_logprob_gap": _mean(token_gaps),
            "n_options": len(gaps), "option_logprob_gap": _mean([abs(g) for g in gaps]),
            "option_logprob_bias": _mean(gaps), "choice_agreement": _mean(choice)}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _nan_mean(xs: list[float]) -> float:
    return _mean([x for x in xs if x == x])


@dataclass
class Measured:
    """An evaluation's two sides through llama.cpp, for `aglora.pipeline.eval.metrics`."""

    sides: dict[str, tuple[list, list, list]]  # "base"/"after" -> (scores, lengths, generations)
    kl: dict[str, float]                       # kl_neighbor, kl_utility
    base_nll: dict[str, float] | None          # base-model NLL of the greedy forget answers
    record: dict                               # what ran: files, versions, agreement


def _runners(gguf: dict[str, Path | None], n_ctx: int) -> dict[str, LlamaCpp]:
    """The base model, and the after model when a LoRA or merged GGUF is given."""
    runners = {"base": LlamaCpp(gguf["base"], n_ctx=n_ctx)}
    if gguf.get("lora"):
        runners["after"] = LlamaCpp(gguf["base"], gguf["lora"], n_ctx=n_ctx)
    elif gguf.get("merged"):
        runners["after"] = LlamaCpp(gguf["merged"], n_ctx=n_ctx)
    return runners


def _kl(runners: dict[str, LlamaCpp], tok, probes: list[Probe]) -> dict[str, float]:
    """KL(base || after) on the neighbour and general utility probes (0 without an after)."""
    if "after" not in runners:
        return {"kl_neighbor": 0.0, "kl_utility": 0.0}
    groups = {"kl_neighbor": [p for p in probes if p.split == "neighbor"],
              "kl_utility": [p for p in probes if p.split == "utility" and p.family == "general"]}
    return {k: kl_between(runners["after"], runners["base"], tok, ps) for k, ps in groups.items()}


def measure_sides(model: nn.Module, tok, probes: list[Probe], cfg: EvalConfig,
                  gguf: dict[str, Path | None], compare_torch: bool) -> Measured:
    """Both sides of an evaluation through llama.cpp: option scores of every probe, greedy
    generations where `cfg.generate_splits` says, KL on neighbours and utility, the base NLL
    of the forget answers; `compare_torch`: each side against `model` (PyTorch; the base side
    with its adapter disabled). `model` also gives the stop tokens."""
    n_ctx = context_size(tok, probes, cfg.max_new_tokens)
    gen_mask = [p.split in cfg.generate_splits for p in probes]
    runners = _runners(gguf, n_ctx)
    stops = stop_ids(model, tok)
    sides = {}
    for name, runner in runners.items():
        scores, lengths = score_options(runner, tok, probes)
        sides[name] = (scores, lengths,
                       generate_greedy(runner, tok, probes, cfg.max_new_tokens, stops, gen_mask))
    sides.setdefault("after", sides["base"])  # no after model: the base is its own after
    forget = [i for i, p in enumerate(probes) if p.split == "forget" and gen_mask[i]]
    base_nll = None
    if forget:
        base_nll = {k: _nan_mean(continuation_nll(runners["base"], tok,
                                                  [probes[i] for i in forget],
                                                  [sides[k][2][i][0] for i in forget]))
                    for k in ("base", "after")}
    record = {"name": "llama.cpp", "llama_cpp_python": llama_cpp_module().__version__,
              **{f"gguf_{k}": str(v) if v else None for k, v in gguf.items()},
              "n_ctx": n_ctx, "n_samples": 0, "tokenizer": "the run's Hugging Face tokenizer"}
    if compare_torch:
        record["agreement"] = {name: compare(runner, model, tok, probes, name == "base",
                                             sides[name][0])
                               for name, runner in runners.items()}
    return Measured(sides, _kl(runners, tok, probes), base_nll, record)
