"""Model tests run single-threaded: their tensors are tiny, and on a loaded 2-core machine OpenMP
thread contention made one small convolution take ~60 ms with 2 threads vs ~0.1 ms with 1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
