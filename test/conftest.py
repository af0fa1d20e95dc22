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


@pytest.fixture(autouse=True, scope="session")
def _onnx_cache_in_a_temporary_folder(tmp_path_factory):
    """ONNX graphs the engine exports go to a folder of this session, not the user's cache;
    one session shares them (an export takes seconds, a cached graph milliseconds)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SWIFTSEG_CACHE_DIR", str(tmp_path_factory.mktemp("onnx-cache")))
    yield
    patch.undo()
