"""The zoo's tests run small tensors (tiny networks, the meta device, 32 px
inputs): one torch thread does them faster than two, which spin against
each other and against other processes for the cores."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
