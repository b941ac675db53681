"""The zoo's tests run small tensors (tiny networks, the meta device, 32 px
inputs): one torch thread does them faster than two, which spin against
each other and against other processes for the cores."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
