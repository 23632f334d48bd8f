"""Shared fixtures: deterministic CPU, small configs."""
import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("CI", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def ci_cfg():
    from eclipse_lite.config import ModelConfig
    return ModelConfig.preset("ci")
