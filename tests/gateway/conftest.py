from __future__ import annotations

import pytest

from tests.fakes import FakeFleet, gpu_and_cpu


@pytest.fixture
def fleet() -> FakeFleet:
    """A 90 tok/s GPU box and a 13 tok/s CPU box (test modules may bring their own)."""
    return gpu_and_cpu()
