"""Cost of aglora's own machinery, printed as a table (targets in brackets).

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/step_speed.py [--steps 8] [--batch 8]

On the embedded SmolLM2-135M-Instruct (CPU) with the Inception concept's training items:
- masked-LoRA training step vs plain LoRA at the same rank and batch, on the same layers and on
  every layer (target: masked <= 1.10 x plain). A step is one step of the training loop with the
  demo objective (NPO forget + KL retain: forward+backward on a forget batch, a base forward and
  a forward+backward on a retain batch); the variants' steps interleaved round-robin, median
  over `--steps` rounds after one warm-up round;
- record + score, in units of one forward+backward pass (NLL of the answers, gradients down to
  the input embeddings) over the same items in the same batches (target: <= 3);
- evaluation throughput: likelihood-choice probes/s and greedy-generation probes/s;
- peak memory of a training step run (CPU: resident set above the level before; CUDA:
  allocated).
`benchmarks/gpu_qwen_shape.py` runs the same measurements on a Qwen2.5-3B-shaped model.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from aglora.bench.memory import PeakMemory, release_memory
from aglora.concepts import Probe, load_concept
from aglora.config import LoraConfig, MaskConfig, ModelConfig, TrainConfig
from aglora.model.adapter import attach_lora
from aglora.model.decode import generate
from aglora.model.forward import target_logprobs
from aglora.model.likelihood import score_options_with_lengths
from aglora.model.neurons import NeuronMask, mlp_layers
from aglora.model.tokens import encode
from aglora.pipeline.mask import select
from aglora.pipeline.record import record
from aglora.pipeline.score import compute_scores
from aglora.pipeline.train.loop import train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def step_times(model: nn.Module, tok, forget: list[Probe], retain: list[Probe],
               variants: dict[str, tuple[NeuronMask | None, LoraConfig]], tcfg: TrainConfig,
               rounds: int) -> dict[str, tuple[float, int]]:
    """Per variant: (median seconds of one training step, peak memory bytes of a step).

    The variants' steps are interleaved round-robin (masked, plain, ...; `rounds` times after
    one warm-up round), so a change in machine load during the measurement hits every variant
    alike. Each step is one `train.train` call with max_steps=1 on the same seeded batch; the
    time is the loop's own (the NPO reference pass before it is not counted).
    """
    device = next(model.parameters()).device
    one = dataclasses.replace(tcfg, max_steps=1, min_steps=1)
    models = {}
    for name, (mask, lcfg) in variants.items():
        torch.manual_seed(0)
        models[name] = attach_lora(copy.deepcopy(model), mask, lcfg)
    times: dict[str, list[float]] = {name: [] for name in variants}
    peaks: dict[str, int] = dict.fromkeys(variants, 0)
    for r in range(rounds + 1):
        for name, pm in models.items():
            release_memory()
            with PeakMemory(device) as mem:
                result = train(pm, tok, forget, retain, one, log=lambda *_: None)
            if r > 0:  # round 0 warms up (allocations, optimiser state)
                times[name].append(result.history[0]["seconds"])
                peaks[name] = max(peaks[name], mem.peak)
    return {name: (statistics.median(times[name]), peaks[name]) for name in variants}


def forward_backward(model: nn.Module, tok, items: list[Probe], batch_size: int) -> None:
    """One forward+backward pass of the answers' NLL over `items`, gradients to the embeddings."""
    device = next(model.parameters()).device
    embed = model.get_input_embeddings()
    for s in range(0, len(items), batch_size):
        chunk = items[s: s + batch_size]
        b = encode(tok, chunk, [p.answer or "" for p in chunk]).to(device)
        with torch.enable_grad():
            embeds = embed(b.input_ids).detach().requires_grad_(True)
            nll = -target_logprobs(model, b, inputs_embeds=embeds).sum()
            nll.backward()


def measure(model: nn.Module, tok, forget: list[Probe], retain: list[Probe],
            eval_probes: list[Probe], steps: int, batch: int, rank: int, k: int,
            gen_tokens: int, log=print) -> list[tuple[str, str, str]]:
    """All measurements -> rows (name, value, note)."""
    device = next(model.parameters()).device
    rows: list[tuple[str, str, str]] = []

    log("[speed] record + score, and one forward+backward over the same items")
    forward_backward(model, tok, forget[:batch], batch)  # warm-up
    fb = timed(lambda: forward_backward(model, tok, forget + retain, batch), device)
    out: dict = {}

    def rec() -> None:
        out["stats"] = record(model, tok, forget, retain, batch)
        out["scores"] = compute_scores(out["stats"], "ratio")

    rs = timed(rec, device)
    rows.append(("forward+backward over forget+retain items", f"{fb:.2f} s",
                 f"{len(forget) + len(retain)} items, batch {batch}"))
    rows.append(("record + score", f"{rs:.2f} s", f"= {rs / fb:.2f} x forward+backward "
                                                  "[target <= 3]"))

    layer_idx = [layer.index for layer in mlp_layers(model)]
    mask = NeuronMask(select(out["scores"]["score"], MaskConfig(k=k)), layer_idx)
    tcfg = TrainConfig(batch_size=batch, check_every=10**9, lr=1e-3)
    base_l = LoraConfig(modules=["down_proj"], rank=rank)
    n_layers = len(mask.layers_with_neurons())
    log(f"[speed] training steps, interleaved: masked LoRA (k={k}, {n_layers} layers), plain "
        "LoRA on the same layers, plain LoRA on every layer")
    res = step_times(model, tok, forget, retain, {
        "masked": (mask, base_l),
        "plain, same layers": (mask, dataclasses.replace(base_l, masked=False)),
        "plain, every layer": (None, dataclasses.replace(base_l, masked=False,
                                                         all_layers=True))}, tcfg, steps)
    t_masked, t_same, t_all = (res[n][0] for n in ("masked", "plain, same layers",
                                                   "plain, every layer"))
    rows.append(("masked LoRA step", f"{t_masked * 1000:.0f} ms",
                 f"rank {rank}, batch {batch}, {n_layers} layers; median of {steps}"))
    rows.append(("plain LoRA step, same layers", f"{t_same * 1000:.0f} ms",
                 f"masked / plain = {t_masked / t_same:.3f} [target <= 1.10]"))
    rows.append(("plain LoRA step, every layer", f"{t_all * 1000:.0f} ms",
                 f"masked / plain = {t_masked / t_all:.3f}"))
    for name, (_, peak) in res.items():
        rows.append((f"peak memory, one training step ({name})", f"{peak / 2**20:.0f} MB",
                     "allocated" if device.type == "cuda" else "RSS above start"))

    choice = [p for p in eval_probes if p.has_choice]
    log(f"[speed] evaluation: likelihood on {len(choice)} probes, greedy generation on "
        f"{min(len(eval_probes), 32)}")
    score_options_with_lengths(model, tok, choice[:4], 32)  # warm-up
    t_lik = timed(lambda: score_options_with_lengths(model, tok, choice, 32), device)
    gen_probes = eval_probes[:32]
    t_gen = timed(lambda: generate(model, tok, gen_probes, 0, max_new_tokens=gen_tokens,
                                   batch_size=32), device)
    rows.append(("eval: likelihood choice", f"{len(choice) / t_lik:.1f} probes/s",
                 f"{len(choice)} probes in {t_lik:.1f} s"))
    rows.append(("eval: greedy generation", f"{len(gen_probes) / t_gen:.2f} probes/s",
                 f"{gen_tokens} new tokens, batch 32"))
    return rows


def print_table(rows: list[tuple[str, str, str]], header: str) -> None:
    print(header)
    print()
    print("| measurement | value | note |")
    print("| --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        from aglora.runtime.hostspeed import speed_index
        speed = speed_index()
        name = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
                f"threads, matmul {speed['gflops_1_thread']:.0f} GFLOPS at 1 thread "
                f"(aglora.runtime.hostspeed)")
    return f"{name}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8,
                        help="timed rounds (one step per variant each)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--k", type=int, default=64, help="neurons in the mask")
    parser.add_argument("--gen-tokens", type=int, default=16)
    args = parser.parse_args()
    from aglora.model.load import load_model
    model, tok = load_model(ModelConfig())
    concept = load_concept("builtin:inception")
    rows = measure(model, tok, concept.forget, concept.retain, concept.eval_probes(), args.steps,
                   args.batch, args.rank, args.k, args.gen_tokens)
    device = next(model.parameters()).device
    print_table(rows, f"SmolLM2-135M-Instruct (embedded), float32, {machine_line(device)}")


if __name__ == "__main__":
    main()
