"""Who a model is: a fingerprint that adapters and exports check, and a digest of all weights.

`fingerprint` (key config fields + a hash of a few sampled weight tensors) is stored with every
adapter; loading onto another base model is refused. `weights_digest` hashes every base weight
(adapter weights excluded): the one model identity in cache keys (`aglora.runtime.cache`).
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from aglora.errors import AgloraError
from aglora.model.forward import causal_lm
from aglora.model.neurons import mlp_layers


def fingerprint(model: nn.Module) -> dict:
    """Identify a base model: key config fields plus a hash of a few weight tensors."""
    base = causal_lm(model)
    cfg = base.config
    keys = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "vocab_size")
    info = {k: getattr(cfg, k, None) for k in keys}
    h = hashlib.sha256()
    layers = mlp_layers(base)
    probes = [base.get_input_embeddings().weight, layers[0].module.down_proj,
              layers[-1].module.up_proj]
    for t in probes:
        if isinstance(t, nn.Module):
            t = getattr(t, "base_layer", t).weight
        w = t
        w = w.detach().float().cpu().contiguous()
        h.update(w.flatten()[:: max(1, w.numel() // 65536)].numpy().tobytes())
    info["weights_sha256"] = h.hexdigest()
    return info


def weights_digest(model: nn.Module) -> str:
    """sha256 over every base weight (adapter weights excluded): a cache key for base results.

    Hashing copies every weight to the CPU (seconds on a 3B model), so the digest is kept on
    the model with each weight's storage and in-place version counter, and recomputed only when
    a weight has changed or been replaced.
    """
    base = causal_lm(model)
    params = sorted(((n, p) for n, p in base.named_parameters() if "lora_" not in n),
                    key=lambda kv: kv[0])
    state = tuple((n, p.data_ptr(), p._version) for n, p in params)
    memo = getattr(base, "_aglora_weights_digest", None)
    if memo is not None and memo[0] == state:
        return memo[1]
    h = hashlib.sha256()
    for name, p in params:
        h.update(name.replace(".base_layer", "").encode())
        h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()
    base._aglora_weights_digest = (state, digest)
    return digest


def check_fingerprint(expected: dict, model: nn.Module, where: str) -> None:
    actual = fingerprint(model)
    if actual != expected:
        diff = [k for k in expected if expected.get(k) != actual.get(k)]
        raise AgloraError(f"{where} was made for another base model (differs in {', '.join(diff)}"
                          "); load it onto the model it was trained on")

