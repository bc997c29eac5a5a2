"""The processes of an `accelerate launch`: which one is main, waiting for it, agreeing with it.

`accelerate launch --config_file CONFIG -m aglora run RUN_CONFIG` starts one aglora process per
device (torchrun underneath: RANK, WORLD_SIZE and LOCAL_RANK in the environment). `ranks()` tells
a process its place. Without a launch (WORLD_SIZE unset or 1) it is rank 0 of 1, accelerate is
not imported, and every helper here reduces to a plain call: a single-process run is what it was.

Under a launch, `accelerate.PartialState` starts the process group and gives each process its
device: its own GPU (NCCL), or the CPU (gloo) on a machine without CUDA or with
ACCELERATE_USE_CPU set. Control messages (what the main process decided, an error it raised)
go over a second group, gloo with a long timeout (`WAIT`): the other processes wait there while
the main process records or evaluates alone, which may take hours on a large model. Gradients
and loss values go over the default group.

- `on_main(fn)`: the main process runs `fn`, the others wait; all return the main's result, and
  an exception on the main process is raised on every process (`MainProcessFailed` on the
  others, which the CLI does not print a second time).
- `agree(value)`: the main process's value, on every process.
- `all_sum(tensor)`, `broadcast(tensor)`: in place, over the default group.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch

from aglora.errors import AgloraError

T = TypeVar("T")
WAIT = timedelta(hours=24)  # how long a process waits for the main one at a control message
_log = logging.getLogger("aglora")


class MainProcessFailed(AgloraError):
    """Raised on the other processes when the main process stopped with an error."""


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    size: int = 1
    device: torch.device | None = None  # this process's device under a launch, else None
    fsdp: bool = False                   # the launch asks for FSDP (ACCELERATE_USE_FSDP)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def launched(self) -> bool:
        return self.size > 1


_RANKS: Ranks | None = None
_CONTROL: Any = None  # the gloo group of control messages


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def ranks() -> Ranks:
    """This process's place in the launch (rank 0 of 1 without one); the first call under a
    launch starts the process group."""
    global _RANKS, _CONTROL
    if _RANKS is None:
        if int(os.environ.get("WORLD_SIZE", "1") or "1") <= 1:
            _RANKS = Ranks()
        else:
            import torch.distributed as dist
            from accelerate import PartialState
            cpu = not torch.cuda.is_available() or _flag("ACCELERATE_USE_CPU")
            state = PartialState(cpu=cpu)
            _CONTROL = dist.new_group(backend="gloo", timeout=WAIT)
            device = torch.device("cpu") if state.device.type == "cpu" else state.device
            _RANKS = Ranks(state.process_index, state.num_processes, device,
                           _flag("ACCELERATE_USE_FSDP"))
    return _RANKS


def is_main() -> bool:
    return ranks().is_main


def agree(value: T) -> T:
    """The main process's `value` on every process (pickled; the others' value is ignored)."""
    if not ranks().launched:
        return value
    import torch.distributed as dist
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_CONTROL)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """`fn()` on the main process while the others wait; every process returns its result.

    An exception on the main process is raised there and, as `MainProcessFailed` with its
    message, on every other process, so no process is left waiting for a main one that stopped.
    """
    if not ranks().launched:
        return fn()
    if is_main():
        try:
            value = fn()
        except BaseException as exc:
            agree(("error", str(exc) or type(exc).__name__))
            raise
        agree(("ok", value))
        return value
    kind, value = agree(None)
    if kind == "error":
        raise MainProcessFailed(f"the main process stopped: {value}")
    return value


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the processes, in place (the tensor itself without a launch)."""
    if ranks().launched:
        import torch.distributed as dist
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(tensor: torch.Tensor) -> torch.Tensor:
    """The main process's `tensor` on every process, in place."""
    if ranks().launched:
        import torch.distributed as dist
        dist.broadcast(tensor, src=0)
    return tensor


def launch_device(configured: torch.device) -> torch.device:
    """The device a model goes to: the configured one, or under a launch this process's own
    (its GPU, or the CPU of a gloo launch), whatever `model.device` says."""
    r = ranks()
    if r.device is None or configured == r.device:
        return configured
    if configured.type != r.device.type:
        _log.warning(f"[aglora] warning: model.device={configured} under a launch on "
                     f"{r.device.type}: process {r.rank} uses {r.device}")
    return r.device


def end() -> None:
    """Close the process groups of a launch (nothing without one)."""
    global _RANKS, _CONTROL
    if _RANKS is not None and _RANKS.launched:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
    _RANKS, _CONTROL = None, None
