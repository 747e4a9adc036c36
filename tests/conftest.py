"""Shared test fixtures and the tiny super-image model the training tests use (``from conftest import …``)."""
import pytest
import torch
from super_image import PretrainedConfig, PreTrainedModel
from torch import nn


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped, saying why, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run `make test` on a machine with one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Run torch single-threaded: tiny convolutions are much faster that way on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class TinyConfig(PretrainedConfig):
    model_type = "THERMSR_TINY_TEST"

    def __init__(self, scale=4, n_feats=16, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.n_feats = n_feats
        self.dropout = dropout
        self.data_parallel = False


class TinySR(PreTrainedModel):
    """conv → ReLU (→ dropout) → conv → PixelShuffle: the smallest ×4 model with super-image's save/load."""

    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        s, nf = config.scale, config.n_feats
        self.body = nn.Sequential(nn.Conv2d(3, nf, 3, padding=1), nn.ReLU(), nn.Dropout(config.dropout),
                                  nn.Conv2d(nf, 3 * s * s, 3, padding=1), nn.PixelShuffle(s))

    def forward(self, x):
        return self.body(x)


def tiny_model(seed=0, n_feats=16, dropout=0.0):
    """A TinySR initialised from ``seed``."""
    torch.manual_seed(seed)
    return TinySR(TinyConfig(n_feats=n_feats, dropout=dropout))
