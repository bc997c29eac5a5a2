"""Would vLLM load this adapter? The rules of vLLM's LoRA loader, checked without vLLM.

From vLLM's source (vllm/config/lora.py, vllm/lora/peft_helper.py, vllm/lora/utils.py and the
LoRA model loader): `--max-lora-rank` takes one of `MAX_LORA_RANKS` and an adapter's rank must
not exceed it; the adapter config may have no `modules_to_save`, no bias and no DoRA; the weights
may hold only `lora_A`/`lora_B` factors (any other name is refused as an unsupported LoRA
weight); and each factor's module must be one of the model's LoRA-capable linear layers
(`LORA_MODULES`, for the architectures aglora trains). The check answers for one serving
command, `vllm serve BASE --enable-lora --lora-modules NAME=PATH --max-lora-rank N`, with N the
adapter's rank unless given. vLLM itself is not run here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aglora.export.validate import CONFIG_FILE, AdapterInfo, peft_problems

MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_MODULES = {"llama": _LINEAR, "qwen2": _LINEAR, "mistral": _LINEAR}


@dataclass
class VllmCheck:
    rank: int | None
    max_lora_rank: int | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self, serve: str) -> list[str]:
        """The verdict, then one line per problem (or the serving command) and note."""
        if self.ok:
            out = [f"vllm: loads; serve it with: {serve}"]
        else:
            out = [f"vllm: would not load it ({len(self.problems)} problem(s)); change:"]
            out += [f"  - {p}" for p in self.problems]
        return out + [f"  note: {n}" for n in self.notes]


def _next_allowed(rank: int) -> int | None:
    return next((r for r in MAX_LORA_RANKS if r >= rank), None)


def check_vllm(info: AdapterInfo, max_lora_rank: int | None = None) -> VllmCheck:
    """Every reason vLLM would refuse the adapter with `--max-lora-rank max_lora_rank` (default:
    the adapter's rank), each with what to change; the peft problems come first."""
    rank = info.rank
    limit = max_lora_rank if max_lora_rank is not None else rank
    check = VllmCheck(rank, limit, problems=peft_problems(info))
    allowed = ", ".join(map(str, MAX_LORA_RANKS))
    if rank is not None and limit is not None:
        up = _next_allowed(rank)
        if max_lora_rank is None and rank not in MAX_LORA_RANKS:
            fix = (f"retrain with --set lora.rank={up}, or check with --max-lora-rank {up} "
                   f"(vLLM serves a rank-{rank} adapter in rank-{up} slots)" if up else
                   f"retrain with --set lora.rank={MAX_LORA_RANKS[-1]} or lower")
            check.problems.append(f"rank {rank} is not a value vLLM takes for --max-lora-rank "
                                  f"({allowed}); {fix}")
        elif rank > limit:
            fix = (f"serve with --max-lora-rank {up}, or retrain with --set lora.rank={limit}"
                   if up else f"retrain with --set lora.rank={MAX_LORA_RANKS[-1]} or lower")
            check.problems.append(f"rank {rank} exceeds --max-lora-rank {limit}; {fix}")
    cfg = info.config
    if cfg.get("modules_to_save"):
        check.problems.append(f"{CONFIG_FILE} sets modules_to_save={cfg['modules_to_save']}: "
                              "vLLM loads LoRA factors only; retrain without fully trained "
                              "modules (aglora never sets them)")
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        check.problems.append(f"{CONFIG_FILE} has bias={cfg.get('bias')!r}, lora_bias="
                              f"{cfg.get('lora_bias')!r}: vLLM serves adapters without bias "
                              "only; retrain with bias='none' (aglora's default)")
    if cfg.get("use_dora"):
        check.problems.append(f"{CONFIG_FILE} sets use_dora: vLLM does not serve DoRA; "
                              "retrain as plain LoRA")
    model_type = (info.base_fingerprint or {}).get("model_type")
    supported = LORA_MODULES.get(model_type)
    if supported is None:
        check.notes.append(f"model_type {model_type!r}: this check knows vLLM's LoRA modules "
                           f"for {', '.join(LORA_MODULES)} only; the target modules were not "
                           "checked")
    else:
        bad = sorted({m.rsplit(".", 1)[-1] for m in info.modules()} - set(supported))
        if bad:
            check.problems.append(f"target module(s) {', '.join(bad)} are not LoRA layers vLLM "
                                  f"serves for {model_type} ({', '.join(supported)}); retrain "
                                  "with lora.modules among down_proj, gate_proj, up_proj")
    return check
