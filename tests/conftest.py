import os
import sys

import pytest
import torch

TESTS = os.path.dirname(os.path.abspath(__file__))
# Tests run against the working tree, whether or not the package is installed in editable mode;
# the test modules, one folder down, import their shared helpers (model_utils, ...) from tests/.
sys.path.insert(0, os.path.dirname(TESTS))
sys.path.insert(1, TESTS)


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's tests: their many small tensor operations only
    contend for a small shared machine's cores with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
