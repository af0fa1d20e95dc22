"""Suite-wide test settings.

One intra-op thread: on a shared 2-core CI machine, two spinning OpenMP threads per
process made small forward passes ~50x slower when anything else ran, and results of
float reductions are then also independent of the core count.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
