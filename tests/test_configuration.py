"""Config + Hub I/O: one mechanism for models and schedulers (pipelines reuse it)."""

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from hub_testing import populate_hub_cache
from ncml import ModelMixin, VESDEScheduler, VPSDEScheduler
from ncml.configuration_utils import resolve_class
from ncml.schedulers import SDEScheduler


@dataclass(frozen=True)
class TinyConfig:
    width: int = 3
    scale: float = 1.0
    name: str | None = None
    sizes: tuple[int, ...] = (1, 2)


class TinyModel(ModelMixin):
    config_class = TinyConfig

    def __init__(self, config: TinyConfig):
        super().__init__()
        self.config = config
        self.lin = nn.Linear(config.width, config.width)


def test_model_round_trip(tmp_path):
    m = TinyModel(TinyConfig(width=4, name="x", sizes=(3, 4)))
    m.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = TinyModel.from_pretrained(tmp_path)
    assert loaded.config == m.config
    for (k, a), (_, b) in zip(m.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_from_config_dict_and_dataclass():
    assert TinyModel.from_config({"width": 2}).config == TinyConfig(width=2)
    assert TinyModel.from_config(TinyConfig(width=5)).lin.in_features == 5
    with pytest.raises(TypeError, match="config must be"):
        TinyModel.from_config([1, 2])


def test_unknown_key_and_wrong_types_raise():
    with pytest.raises(ValueError, match="unknown key.*widht"):
        TinyModel.from_config({"widht": 2})
    with pytest.raises(TypeError, match="config.width"):
        TinyModel.from_config({"width": 2.5})
    with pytest.raises(TypeError, match="config.width"):
        TinyModel.from_config({"width": True})
    with pytest.raises(TypeError, match=r"config.sizes\[1\]"):
        TinyModel.from_config({"sizes": [1, "a"]})


def test_config_of_another_class_raises(tmp_path):
    VPSDEScheduler().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "scheduler_config.json").read_text())
    with pytest.raises(ValueError, match="'VPSDEScheduler', not 'VESDEScheduler'"):
        VESDEScheduler.from_config(cfg)


def test_load_by_repo_id_from_local_hub_cache(tmp_path, hub_cache):
    m = TinyModel(TinyConfig(width=2))
    m.save_pretrained(tmp_path / "src" / "backbone")
    populate_hub_cache(tmp_path / "src", "org/tiny", hub_cache)
    loaded = TinyModel.from_pretrained("org/tiny", subfolder="backbone", cache_dir=hub_cache)
    assert torch.equal(loaded.lin.weight, m.lin.weight)
    loaded = TinyModel.from_pretrained("org/tiny", subfolder="backbone", cache_dir=hub_cache, local_files_only=True)
    assert torch.equal(loaded.lin.bias, m.lin.bias)
    with pytest.raises(FileNotFoundError, match="org/missing"):
        TinyModel.from_pretrained("org/missing", cache_dir=hub_cache)
    with pytest.raises(FileNotFoundError, match="subfolder='nope'"):
        TinyModel.from_pretrained("org/tiny", subfolder="nope", cache_dir=hub_cache)


def test_missing_local_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        TinyModel.from_pretrained(str(tmp_path / "a" / "b" / "c"))


class _Boom:
    """Unpickling this writes a marker file: proof that a loader unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_checkpoint_is_refused_never_unpickled(tmp_path):
    TinyModel(TinyConfig()).save_config(tmp_path)
    marker = tmp_path / "unpickled"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(ValueError, match="refuses to unpickle"):
        TinyModel.from_pretrained(tmp_path)
    assert not marker.exists()


def test_corrupt_and_mismatched_weights_raise(tmp_path):
    m = TinyModel(TinyConfig(width=3))
    m.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        TinyModel.from_pretrained(tmp_path)
    TinyModel(TinyConfig(width=4)).save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match="shape"):
        TinyModel.from_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="missing"):
        m.load_state_dict({"lin.weight": m.lin.weight})


def test_save_is_atomic_and_leaves_no_temporaries(tmp_path, monkeypatch):
    m = TinyModel(TinyConfig())
    m.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with torch.no_grad():
        m.lin.weight.add_(1)
    with pytest.raises(OSError, match="disk full"):
        m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_push_to_hub_uploads_saved_files_and_model_card(monkeypatch):
    from huggingface_hub import HfApi

    calls = {}

    def create_repo(self, repo_id, **kw):
        calls["create"] = (repo_id, kw)

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kw):
        folder = Path(folder_path)
        calls["upload"] = (repo_id, sorted(p.name for p in folder.iterdir()), (folder / "README.md").read_text())

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    TinyModel(TinyConfig()).push_to_hub("org/tiny", private=True)
    assert calls["create"] == ("org/tiny", {"private": True, "exist_ok": True})
    repo, files, card = calls["upload"]
    assert repo == "org/tiny" and files == ["README.md", "config.json", "model.safetensors"]
    assert "library_name: ncml" in card
    VPSDEScheduler().push_to_hub("org/sched")
    assert calls["upload"][1] == ["README.md", "scheduler_config.json"]
    with pytest.raises(ValueError, match="repo_id"):
        TinyModel(TinyConfig()).push_to_hub("")


def test_resolve_class_only_resolves_ncml_classes():
    assert resolve_class("ncml", "VPSDEScheduler", SDEScheduler, argname="x") is VPSDEScheduler
    with pytest.raises(ValueError, match="not an ncml class"):
        resolve_class("os", "system", SDEScheduler, argname="x")
    with pytest.raises(ValueError, match="not an ncml class"):
        resolve_class("ncml", "Nope", SDEScheduler, argname="x")
    with pytest.raises(ValueError, match="not an ncml class"):
        resolve_class("ncml", "TinyModel", SDEScheduler, argname="x")  # a test class claiming to be ncml's
    with pytest.raises(ValueError, match="not a SDEScheduler"):
        resolve_class("test_configuration", "TinyModel", SDEScheduler, argname="x")
