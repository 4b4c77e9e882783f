"""ncml.training.checkpointing on its own: one CPU process, a tiny NCPN, no Accelerate.

The end-to-end checks (a SIGKILL mid-write, exact resume in a new process, two processes, Accelerate's older
checkpoints) are in tests/examples/test_train_ncml.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import re

import numpy as np
import pytest
import torch

from ncml import NCMLLoss, NCPNConfig, NCPNModel, VPSDEScheduler
from ncml.data import to_model_space
from ncml.training import EMA, checkpointing
from ncml.training.checkpointing import (checkpoint_meta, drop_metrics_after, get_rng_state, list_checkpoints,
                                         load_checkpoint, resolve_resume, save_checkpoint, set_rng_state,
                                         verify_manifest)

TINY = dict(sample_size=4, in_channels=1, nr_resnet=1, nr_filters=8, nr_logistic_mix=2, attention_heads=2,
            embedding_dim=16, dropout=0.0)
FILES = ["ema.safetensors", "model.safetensors", "ncml_checkpoint.json", "optimizer.safetensors", "rng_state_0.json"]


class OneProcess:
    """What the checkpoint functions use of an ``accelerate.Accelerator``."""

    def __init__(self, process_index=0, scaler=None):
        self.is_main_process, self.process_index, self.scaler = process_index == 0, process_index, scaler
        self.device = torch.device("cpu")

    def wait_for_everyone(self):
        pass


def data() -> torch.Tensor:
    return to_model_space(torch.randint(0, 256, (4, 4, 4, 1), dtype=torch.uint8))


def components(seed: int, steps: int = 1, **config):
    torch.manual_seed(seed)
    model = NCPNModel(NCPNConfig(**{**TINY, **config}))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    ema = EMA(model, 0.99)
    loss_fn, scheduler = NCMLLoss(), VPSDEScheduler()
    for _ in range(steps):
        x0 = data()
        loss_fn(model, scheduler, x0).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update(model)
    meta = {**checkpoint_meta(model, scheduler, loss_fn), "data": {"examples_per_step": 4, "num_processes": 1}}
    return model, optimizer, ema, meta


def save(out, step, model, optimizer, ema, meta, total_limit=None, accelerator=None):
    return save_checkpoint(accelerator or OneProcess(), out, step, meta, total_limit, model=model,
                           optimizer=optimizer, ema=ema)


def draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_save_then_load_is_bitwise_and_restores_the_rngs(tmp_path):
    model, optimizer, ema, meta = components(0, steps=2)
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    path = save(tmp_path, 2, model, optimizer, ema, meta)
    after_save = draws()
    other, other_opt, other_ema, _ = components(1, steps=1)  # other weights, moments and EMA
    resumed, saved_meta = resolve_resume(str(path), tmp_path, meta)
    assert resumed == path and saved_meta["step"] == 2
    assert load_checkpoint(path, saved_meta, OneProcess(), model=other, optimizer=other_opt, ema=other_ema) == 2
    assert draws() == after_save  # python, numpy and torch continue where the checkpoint left them
    assert_same(other.state_dict(), model.state_dict())
    assert_same(other_opt.state_dict(), optimizer.state_dict())  # moments, step counts and hyper-parameters
    assert_same(other_ema.shadow, ema.shadow) and other_ema.num_updates == ema.num_updates == 2
    # and the same next step from both
    x0 = data()
    for m, o in ((model, optimizer), (other, other_opt)):
        generators = [torch.Generator().manual_seed(i) for i in range(4)]
        NCMLLoss()(m, VPSDEScheduler(), x0, generator=generators).loss.backward()
        o.step()
    assert_same(other.state_dict(), model.state_dict())


def test_the_folder_holds_safetensors_and_json_with_a_sha256_manifest(tmp_path):
    model, optimizer, ema, meta = components(0)
    path = save(tmp_path, 3, model, optimizer, ema, meta)
    assert path == tmp_path / "checkpoint-3" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3"]
    assert sorted(p.name for p in path.iterdir()) == FILES
    saved = json.loads((path / "ncml_checkpoint.json").read_text())
    assert saved["checkpoint_format"] == 2 and saved["step"] == 3 and saved["ema_updates"] == 1
    assert saved["data"] == {"examples_per_step": 4, "num_processes": 1, "examples_seen": 12}
    assert saved["model_class"] == "NCPNModel" and saved["model"]["nr_filters"] == 8 and saved["grad_scaler"] is None
    assert saved["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.99]
    assert set(saved["files"]) == set(FILES) - {"ncml_checkpoint.json"}
    for name, entry in saved["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    rng = json.loads((path / "rng_state_0.json").read_text())
    assert set(rng) == {"python", "numpy", "torch"}  # and "device" on an accelerator


def test_total_limit_latest_and_what_counts_as_a_checkpoint(tmp_path):
    model, optimizer, ema, meta = components(0)
    assert resolve_resume(None, tmp_path, meta) is None
    assert resolve_resume("latest", tmp_path / "nothing", meta) is None  # a new run
    for step in (1, 2, 10):
        save(tmp_path, step, model, optimizer, ema, meta, total_limit=2)
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / ".checkpoint-11.incomplete").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-10"]  # numeric order
    assert resolve_resume("latest", tmp_path, meta)[0] == tmp_path / "checkpoint-10"
    (tmp_path / "checkpoint-11").mkdir()  # the newest entry is damaged: refused, not skipped for checkpoint-10
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "checkpoint-11")) + " is damaged"):
        resolve_resume("latest", tmp_path, meta)
    with pytest.raises(ValueError, match="x: not a complete ncml training checkpoint"):
        resolve_resume(str(tmp_path / "checkpoint-x"), tmp_path, meta)


def test_saving_a_step_again_swaps_the_folder(tmp_path):
    model, optimizer, ema, meta = components(0)
    save(tmp_path, 2, model, optimizer, ema, meta)
    model2, optimizer2, ema2, _ = components(1)
    save(tmp_path, 2, model2, optimizer2, ema2, meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
    fresh, fresh_opt, fresh_ema, _ = components(2)
    path, saved = resolve_resume("latest", tmp_path, meta)
    load_checkpoint(path, saved, OneProcess(), model=fresh, optimizer=fresh_opt, ema=fresh_ema)
    assert_same(fresh.state_dict(), model2.state_dict())


def test_a_full_disk_removes_the_incomplete_folder_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    model, optimizer, ema, meta = components(0)
    save(tmp_path, 1, model, optimizer, ema, meta)
    original = checkpointing.write_file

    def write_file(path, data):
        if path.name == "optimizer.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        original(path, data)

    monkeypatch.setattr(checkpointing, "write_file", write_file)
    with pytest.raises(OSError, match="no space left on device.*checkpoint-2.*earlier ones are intact"):
        save(tmp_path, 2, model, optimizer, ema, meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]
    verify_manifest(tmp_path / "checkpoint-1", json.loads((tmp_path / "checkpoint-1" / "ncml_checkpoint.json")
                                                          .read_text()))


@pytest.mark.parametrize("damage, match", [("missing", "is missing"), ("truncated", "bytes, the manifest"),
                                           ("replaced", "sha256")])
def test_a_damaged_file_is_an_error_naming_it(tmp_path, damage, match):
    model, optimizer, ema, meta = components(0)
    path = save(tmp_path, 1, model, optimizer, ema, meta) / "ema.safetensors"
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-5])
    else:
        data = bytearray(path.read_bytes())
        data[-2] ^= 1
        path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"--resume_from_checkpoint: {re.escape(str(path))}.*{match}"):
        resolve_resume("latest", tmp_path, meta)
    with pytest.raises(ValueError, match=f"^--resume: {re.escape(str(path))}"):  # argname names the flag
        resolve_resume("latest", tmp_path, meta, argname="--resume")


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    model, optimizer, ema, meta = components(0)
    save(tmp_path, 1, model, optimizer, ema, meta)
    _, _, _, other = components(0, nr_filters=16)
    with pytest.raises(ValueError, match=r"another model \(differences, checkpoint vs this run: "
                                         r"\{'nr_filters': \(8, 16\)\}\)"):
        resolve_resume("latest", tmp_path, other)


class Payload:
    """Unpickling this creates ``marker``: the proof that code from a checkpoint ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("name", ["model.safetensors", "ema.safetensors", "optimizer.safetensors", "rng_state_0.json"])
def test_loading_parses_data_only(tmp_path, name):
    model, optimizer, ema, meta = components(0)
    path = save(tmp_path, 1, model, optimizer, ema, meta)
    marker = tmp_path / "payload-ran"
    (path / name).write_bytes(pickle.dumps(Payload(marker)))
    saved = json.loads((path / "ncml_checkpoint.json").read_text())  # load_checkpoint itself, past the manifest
    with pytest.raises(ValueError, match=f"cannot restore {re.escape(str(path / name))}"):
        load_checkpoint(path, saved, OneProcess(), model=model, optimizer=optimizer, ema=ema)
    assert not marker.exists()


def test_a_process_without_its_rng_file_is_refused(tmp_path):
    model, optimizer, ema, meta = components(0)
    path = save(tmp_path, 1, model, optimizer, ema, meta)
    saved = json.loads((path / "ncml_checkpoint.json").read_text())
    with pytest.raises(ValueError, match="written by 1 process.*no rng_state_1.json for process 1"):
        load_checkpoint(path, saved, OneProcess(process_index=1), model=model, optimizer=optimizer, ema=ema)


def test_grad_scaler_state_round_trips(tmp_path):
    model, optimizer, ema, meta = components(0)
    path = save(tmp_path, 1, model, optimizer, ema, meta,
                accelerator=OneProcess(scaler=torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=7)))
    assert json.loads((path / "ncml_checkpoint.json").read_text())["grad_scaler"]["scale"] == 256.0
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    load_checkpoint(path, resolve_resume(str(path), tmp_path, meta)[1], OneProcess(scaler=scaler), model=model,
                    optimizer=optimizer, ema=ema)
    assert scaler.get_scale() == 256.0 and scaler.get_growth_interval() == 7


def test_group_settings_added_since_the_checkpoint_keep_their_live_values(tmp_path):
    model, optimizer, ema, meta = components(0)
    path = save(tmp_path, 1, model, optimizer, ema, meta)
    groups = [{"params": list(model.parameters()), "lr_scale": 3.0}]
    newer = torch.optim.Adam(groups, lr=0.5)  # a group key the checkpoint's groups lack, another lr
    load_checkpoint(path, resolve_resume(str(path), tmp_path, meta)[1], OneProcess(), model=model, optimizer=newer,
                    ema=ema)
    assert newer.param_groups[0]["lr_scale"] == 3.0 and newer.param_groups[0]["lr"] == 1e-3  # lr: the checkpoint's
    assert newer.param_groups[0]["betas"] == (0.9, 0.99)


def test_rng_states_survive_json():
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    state = json.loads(json.dumps(get_rng_state(torch.device("cpu"))))
    expected = draws()
    draws()
    set_rng_state(state, torch.device("cpu"))
    assert draws() == expected


def test_drop_metrics_after_keeps_earlier_rows_and_drops_torn_lines(tmp_path):
    log = tmp_path / "metrics.jsonl"
    drop_metrics_after(log, 3)  # no log yet: nothing to do
    assert not log.exists()
    rows = [{"step": s, "loss": s / 10} for s in (1, 2, 3, 4, 5)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')
    drop_metrics_after(log, 3)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
