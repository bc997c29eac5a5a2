"""What a run's adapter holds, and the problems that keep it from being plain peft LoRA.

`read_adapter` reads adapter_config.json, aglora.json and the weights (safetensors only; the
adapter is small: LoRA factors of a few MLP modules); `peft_problems` lists, one line each, what
keeps it from being an adapter aglora exports: a tensor that is not a `lora_A`/`lora_B` weight, a
module with one factor only, more than one rank, weights for modules adapter_config.json does not
list (or listed modules without weights), non-finite weights, pickled weight files. `shape_problems`
checks the factors against the base model's modules once it is loaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from aglora.errors import AgloraError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
META_FILE = "aglora.json"  # = aglora.model.adapter.META_FILE (a lower layer kept light here)
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, META_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PREFIX = "base_model.model."
FACTORS = {"lora_A.weight": "A", "lora_B.weight": "B"}


@dataclass
class AdapterInfo:
    path: Path
    config: dict
    meta: dict
    shapes: dict[str, tuple[int, ...]]                   # tensor name -> shape
    nonfinite: dict[str, int] = field(default_factory=dict)  # tensor name -> NaN/inf count
    pickle_files: list[str] = field(default_factory=list)

    @property
    def base_fingerprint(self) -> dict | None:
        fp = self.meta.get("base_fingerprint")
        return fp if isinstance(fp, dict) else None

    @property
    def rank(self) -> int | None:
        r = self.config.get("r")
        return r if isinstance(r, int) and not isinstance(r, bool) else None

    def modules(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """Module path (as in the base model: `model.layers.3.mlp.down_proj`) -> its factors'
        shapes by "A" ([r, in]) and "B" ([out, r])."""
        out: dict[str, dict[str, tuple[int, ...]]] = {}
        for name, shape in self.shapes.items():
            module, factor = _split(name)
            if factor is not None:
                out.setdefault(module, {})[factor] = shape
        return out

    def extra_tensors(self) -> list[str]:
        """Tensors that are not a LoRA factor (`...lora_A.weight` / `...lora_B.weight`)."""
        return sorted(n for n in self.shapes if _split(n)[1] is None)

    def tensor_ranks(self) -> set[int]:
        ranks = set()
        for factors in self.modules().values():
            if "A" in factors and len(factors["A"]) == 2:
                ranks.add(factors["A"][0])
            if "B" in factors and len(factors["B"]) == 2:
                ranks.add(factors["B"][1])
        return ranks


def _split(name: str) -> tuple[str, str | None]:
    """(module path, "A" | "B") of a LoRA factor's tensor name; (name, None) for anything else."""
    for suffix, factor in FACTORS.items():
        if name.endswith("." + suffix):
            module = name[: -len(suffix) - 1]
            return module.removeprefix(PREFIX), factor
    return name, None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AgloraError(f"{path}: unreadable ({str(exc).splitlines()[0]}); retrain the "
                          "adapter (aglora train RUN_DIR)") from None
    if not isinstance(data, dict):
        raise AgloraError(f"{path}: not a JSON object; retrain the adapter (aglora train "
                          "RUN_DIR)")
    return data


def read_adapter(adapter_dir: Path) -> AdapterInfo:
    """Read a saved adapter; a missing or unreadable file is an AgloraError."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    for name in ADAPTER_FILES:
        if not (adapter_dir / name).is_file():
            raise AgloraError(f"{adapter_dir} has no {name}; it is not a whole aglora adapter: "
                              "retrain it (aglora train RUN_DIR)")
    config = _read_json(adapter_dir / CONFIG_FILE)
    meta = _read_json(adapter_dir / META_FILE)
    try:
        tensors = load_file(str(adapter_dir / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AgloraError(f"{adapter_dir / WEIGHTS_FILE}: unreadable adapter weights "
                          f"({str(exc).splitlines()[0]}); retrain it (aglora train RUN_DIR)"
                          ) from None
    shapes = {n: tuple(t.shape) for n, t in tensors.items()}
    nonfinite = {}
    for n, t in tensors.items():
        if t.is_floating_point():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                nonfinite[n] = bad
    pickles = sorted(p.name for p in adapter_dir.iterdir()
                     if p.is_file() and p.suffix in PICKLE_SUFFIXES)
    return AdapterInfo(adapter_dir, config, meta, shapes, nonfinite, pickles)


def _listed(module: str, targets) -> bool:
    """Whether peft's `target_modules` (a regex, or names matched whole or as a dotted suffix)
    covers `module`."""
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith("." + t) for t in targets)


def _shown(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def peft_problems(info: AdapterInfo) -> list[str]:
    """What keeps `info` from being a plain peft LoRA adapter aglora exports, one line each."""
    problems = []
    retrain = "retrain it (aglora train RUN_DIR)"
    if info.pickle_files:
        problems.append(f"{_shown(info.pickle_files)} hold pickled weights; aglora exports "
                        f"safetensors only ({WEIGHTS_FILE}): delete them")
    if info.config.get("peft_type") != "LORA":
        problems.append(f"{CONFIG_FILE} has peft_type {info.config.get('peft_type')!r}, not "
                        f"'LORA'; {retrain}")
    extra = info.extra_tensors()
    if extra:
        problems.append(f"{len(extra)} tensor(s) besides the LoRA factors (lora_A/lora_B "
                        f"weights): {_shown(extra)}; export an adapter that holds LoRA factors "
                        f"only: {retrain}")
    modules = info.modules()
    if not modules:
        problems.append(f"{WEIGHTS_FILE} holds no LoRA factor; {retrain}")
    half = sorted(m for m, f in modules.items() if len(f) != 2)
    if half:
        problems.append(f"module(s) with only one of lora_A and lora_B: {_shown(half)}; "
                        f"{retrain}")
    ranks = info.tensor_ranks()
    pattern = info.config.get("rank_pattern") or {}
    if isinstance(pattern, dict):
        ranks |= {v for v in pattern.values() if isinstance(v, int)}
    if info.rank is None:
        problems.append(f"{CONFIG_FILE} gives no rank r; {retrain}")
    elif ranks - {info.rank}:
        problems.append(f"more than one rank ({', '.join(map(str, sorted(ranks | {info.rank})))}"
                        f"; adapter_config.json says r={info.rank}): the export needs one "
                        f"uniform rank; {retrain}")
    targets = info.config.get("target_modules")
    if not targets or not isinstance(targets, str | list):
        problems.append(f"{CONFIG_FILE} lists no target_modules; {retrain}")
    else:
        unlisted = sorted(m for m in modules if not _listed(m, targets))
        if unlisted:
            problems.append(f"weights for module(s) {CONFIG_FILE} does not list in "
                            f"target_modules: {_shown(unlisted)}; {retrain}")
        if isinstance(targets, list):
            empty = [t for t in targets if not any(_listed(m, [t]) for m in modules)]
            if empty:
                problems.append(f"target_modules lists {_shown(empty)} but {WEIGHTS_FILE} "
                                f"holds no weights for it; {retrain}")
    for name, bad in sorted(info.nonfinite.items()):
        problems.append(f"weight {name} holds {bad} non-finite value(s) (NaN or inf: training "
                        "diverged); retrain with a lower train.lr")
    return problems


def shape_problems(info: AdapterInfo, base) -> list[str]:
    """Factors that do not fit the base model's modules: A is [r, in_features], B [out, r]."""
    problems = []
    named = dict(base.named_modules())
    for module, factors in sorted(info.modules().items()):
        target = named.get(module)
        if target is None or not hasattr(target, "in_features"):
            problems.append(f"the adapter has weights for {module}, which the base model has "
                            "no linear layer for")
            continue
        a, b = factors.get("A"), factors.get("B")
        if (a and a[-1] != target.in_features) or (b and b[0] != target.out_features):
            problems.append(f"{module}: the adapter's factors ({a}, {b}) do not fit the base "
                            f"model's [{target.out_features}, {target.in_features}] weight")
    return problems
