"""Training tests run torch on one thread: the matrices are small, and on a shared 2-core machine
two OpenMP threads contend badly (measured: a CoT step 1.5-10x slower).  Restored afterwards."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
