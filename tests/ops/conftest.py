"""Fixtures of the selective-scan tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def torch_threads():
    """``torch.set_num_threads`` for the test, the thread count restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
