import os
import sys
from pathlib import Path

import pytest
import torch

# tests/ helpers (hub_testing, backbone_tests, …) import as plain modules
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "schedulers"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A fresh, empty Hub cache folder, used as ``HF_HUB_CACHE`` with the Hub offline."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache
