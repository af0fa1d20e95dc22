"""Suite-wide test settings.

One intra-op thread: on a shared 2-core CI machine, two spinning OpenMP threads per
process made small forward passes ~50x slower when anything else ran, and results of
float reductions are then also independent of the core count.
"""

import contextlib
import logging
import os

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
    """ONNX graphs the engine exports go to a folder of this test run, not the user's
    cache; the run shares them (an export takes seconds, a cached graph milliseconds),
    across pytest-xdist's workers too: their base folders have one parent per run, and
    the engine writes a graph under a temporary name and renames it, so two workers
    exporting the same graph at once leave one whole file. Tests of the cache itself
    pass their own folder."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        folder = base.parent / "onnx-cache"
        folder.mkdir(exist_ok=True)
    else:
        folder = tmp_path_factory.mktemp("onnx-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("SWIFTSEG_CACHE_DIR", str(folder))
    yield
    patch.undo()


class _Records(logging.Handler):
    """Keeps every record it handles, in order."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@pytest.fixture
def log_records():
    """`with log_records("swiftseg_ros.engine", logging.INFO) as records:` collects what that
    logger emits, by a handler on the logger itself.

    Not pytest's `caplog`, which listens on the root logger: under `colcon test`, once
    `launch` is imported, its logger class is installed and loggers created after that no
    longer propagate to the root logger (seen under Jazzy), so `caplog` saw nothing there.
    """
    @contextlib.contextmanager
    def capture(name: str, level: int = logging.INFO):
        logger = logging.getLogger(name)
        handler = _Records()
        previous = logger.level
        logger.addHandler(handler)
        logger.setLevel(level)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            logger.setLevel(previous)

    yield capture


# the training tests' data (test_train_run.py, test_train_stops.py): made once per module
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """8 synthetic frames of 128x64 (train_helpers.write_tiny_data)."""
    from train_helpers import write_tiny_data

    return write_tiny_data(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """train_helpers.TINY as a recipe file, for the command line."""
    from train_helpers import write_tiny_recipe

    return write_tiny_recipe(tmp_path_factory.mktemp("recipe"))
