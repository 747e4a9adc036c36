"""Shared test fixtures."""
import pytest


@pytest.fixture
def one_thread():
    """Run torch single-threaded: tiny convolutions are much faster that way on a busy 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
