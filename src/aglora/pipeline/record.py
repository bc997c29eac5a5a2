"""Record MLP neuron activations and their gradients on forget and retain items.

Forward pre-hooks on each layer's `mlp.down_proj` capture its input `a_l` ([batch, seq, d_ff]):
the layer's neurons. The hooks live inside a context manager and are removed in `finally`.

One forward+backward pass per batch yields everything the scorers need, so recording costs about
one training step per batch:
- activation statistics over content tokens (mean, mean |a|, variance), for the contrast score;
- gradient saliency  S[l, j] = E_examples sum_t |a_tj * dL/da_tj|,
- empirical Fisher   F[l, j] = E_examples (sum_t dL_i/da_tj)^2,
where L is the concept-specific loss: the NLL of each item's *answer* tokens. The sums run over all
content tokens (prompt and answer), not only the answer: facts are recalled by MLPs at the
subject's tokens in the prompt (Meng et al., ROME), which an answer-only sum would miss.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from aglora.concepts import Probe
from aglora.model.forward import target_logprobs
from aglora.model.neurons import capture_neurons, mlp_layers
from aglora.model.tokens import encode


def _targets(items: list[Probe]) -> list[str]:
    missing = [p.id for p in items if not p.answer]
    if missing:
        raise ValueError(f"items without an answer cannot be recorded: {missing[:3]}")
    return [p.answer for p in items]  # type: ignore[misc]


def record_statistics(model: nn.Module, tok, items: list[Probe], batch_size: int = 8,
                      desc: str = "record") -> dict[str, torch.Tensor]:
    """Per-neuron statistics of one item set -> {stat: [n_layers, d_ff]} (float32, cpu)."""
    layers = mlp_layers(model)
    n_layers, d_ff = len(layers), layers[0].d_ff
    device = next(model.parameters()).device
    sums = {k: torch.zeros(n_layers, d_ff, dtype=torch.float64) for k in
            ("a", "a_abs", "a_sq", "saliency", "fisher")}
    n_tokens = 0
    n_examples = 0
    embed = model.get_input_embeddings()
    for start in tqdm(range(0, len(items), batch_size), desc=desc, leave=False):
        chunk = items[start: start + batch_size]
        batch = encode(tok, chunk, _targets(chunk)).to(device)
        with capture_neurons(layers) as store, torch.enable_grad():
            # The graph is built from the embeddings, so no base weight needs requires_grad.
            embeds = embed(batch.input_ids).detach().requires_grad_(True)
            nll = -target_logprobs(model, batch, inputs_embeds=embeds).sum()
            acts = [store[layer.index] for layer in layers]
            grads = torch.autograd.grad(nll, acts)
        content = batch.content_mask.unsqueeze(-1)  # [batch, seq, 1]
        for li, (a, g) in enumerate(zip(acts, grads, strict=True)):
            a = a.detach().float() * content  # [batch, seq, d_ff]
            g = g.float() * content
            sums["a"][li] += a.sum((0, 1)).double().cpu()
            sums["a_abs"][li] += a.abs().sum((0, 1)).double().cpu()
            sums["a_sq"][li] += (a * a).sum((0, 1)).double().cpu()
            sums["saliency"][li] += (a * g).abs().sum((0, 1)).double().cpu()
            sums["fisher"][li] += g.sum(1).pow(2).sum(0).double().cpu()
        n_tokens += int(batch.content_mask.sum())
        n_examples += len(chunk)
    mean = sums["a"] / n_tokens
    return {
        "act_mean": mean.float(),
        "act_absmean": (sums["a_abs"] / n_tokens).float(),
        "act_var": (sums["a_sq"] / n_tokens - mean * mean).clamp_min(0).float(),
        "saliency": (sums["saliency"] / n_examples).float(),
        "fisher": (sums["fisher"] / n_examples).float(),
    }


def record(model: nn.Module, tok, forget: list[Probe], retain: list[Probe],
           batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Statistics for both sets, keyed 'forget.<stat>' / 'retain.<stat>' ([n_layers, d_ff])."""
    out: dict[str, torch.Tensor] = {}
    for name, items in (("forget", forget), ("retain", retain)):
        stats = record_statistics(model, tok, items, batch_size, desc=f"record {name}")
        out.update({f"{name}.{k}": v for k, v in stats.items()})
    return out
