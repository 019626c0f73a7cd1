"""The one-torch-thread fixture of the training, CLI and example tests: the matrices are small,
and on a shared 2-core machine two OpenMP threads contend badly.  Import it into a test module
(or conftest.py) to make it autouse there; the caller's thread count is restored afterwards."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
