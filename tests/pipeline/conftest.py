"""Pipeline tests run torch on one thread: the machine is shared, and oversubscribed threads
make the tiny-model runs many times slower."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
