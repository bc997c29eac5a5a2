"""The host speed index (aglora.runtime.hostspeed)."""

from __future__ import annotations

import re


def test_host_speed_index_is_positive_and_restores_threads():
    import torch

    from aglora.runtime.hostspeed import matmul_gflops, speed_line
    before = torch.get_num_threads()
    assert matmul_gflops(1, repeats=3) > 0
    assert torch.get_num_threads() == before
    assert re.match(r"host speed index: fp32 matmul [0-9.]+ GFLOPS at 1 thread, [0-9.]+ at \d+",
                    speed_line())
