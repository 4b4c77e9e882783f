"""Training checkpoints that resume bit-exactly and never run code from the folder.

A checkpoint is a folder ``checkpoint-<step>/`` of safetensors and JSON only::

    model.safetensors       live weights              ema.safetensors         EMA weights (float32)
    optimizer.safetensors   the optimizer's tensors (Adam's moments and step counts), "<param index>.<name>"
    rng_state_<rank>.json   each process's RNGs: python, numpy, torch CPU and the training device
    ncml_checkpoint.json    model/scheduler/loss configs, step, data position (examples seen, batch layout), EMA
                            update count, the optimizer's hyper-parameters, the grad scaler's state, and a manifest
                            of the other files (name, size, sha256)

:func:`save_checkpoint` writes it into a hidden temporary folder ``.checkpoint-<step>.incomplete`` that is renamed
to ``checkpoint-<step>`` only when complete (every file fsynced first), so a kill during the write leaves the
previous checkpoint intact; a failed write (a full disk) removes the temporary folder. ``total_limit`` keeps the
newest checkpoints only.

:func:`resolve_resume` finds the checkpoint to resume from (a folder, or ``"latest"``: the newest
``checkpoint-<step>`` entry, refused if damaged rather than silently replaced by an older one), checks every file
against the manifest (:func:`verify_manifest`: a missing, truncated or altered file is an error naming it) and
the configs against this run's. :func:`load_checkpoint` then restores the model, optimizer, EMA, grad scaler and
this process's RNGs, parsing data only. Checkpoints of Accelerate's ``save_state`` (the format before this one:
``ncml_checkpoint.json`` without ``checkpoint_format``) are read with ``torch.load(weights_only=True)``, which
rebuilds tensors, numbers, strings and numpy arrays only and refuses any other object instead of running its code;
that path alone needs ``accelerate``, which wrote them.

Processes are coordinated through an ``accelerator``: anything with ``is_main_process``, ``process_index``,
``device``, ``scaler`` (a ``torch.amp.GradScaler`` or None) and ``wait_for_everyone()``, such as
``accelerate.Accelerator``. Nothing here imports Accelerate otherwise. Errors name the checkpoint by ``argname``
(the command-line flag, by default ``--resume_from_checkpoint``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..configuration_utils import config_to_dict
from ..hub_utils import atomic_write_text, read_json
from ..models.modeling_utils import load_safetensors
from .ema import EMA

__all__ = ["CHECKPOINT_META", "CHECKPOINT_FORMAT", "CHECKPOINT_RE", "MODEL_FILE", "EMA_FILE", "OPTIMIZER_FILE",
           "rng_file", "checkpoint_meta", "list_checkpoints", "resolve_resume", "verify_manifest", "save_checkpoint",
           "write_checkpoint", "write_file", "load_checkpoint", "load_accelerate_checkpoint", "get_rng_state",
           "set_rng_state", "drop_metrics_after"]

CHECKPOINT_META = "ncml_checkpoint.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
MODEL_FILE, EMA_FILE, OPTIMIZER_FILE = "model.safetensors", "ema.safetensors", "optimizer.safetensors"
CHECKPOINT_FORMAT = 2  # ncml_checkpoint.json without "checkpoint_format": Accelerate's save_state of older versions
ARGNAME = "--resume_from_checkpoint"


def rng_file(rank: int) -> str:
    """The name of process ``rank``'s RNG file."""
    return f"rng_state_{rank}.json"


def checkpoint_meta(model, scheduler, loss) -> dict:
    """What identifies a run's components: the classes and configs of the model, scheduler and loss."""
    return {"model_class": type(model).__name__, "model": config_to_dict(model.config),
            "scheduler_class": type(scheduler).__name__, "scheduler": config_to_dict(scheduler.config),
            "loss": config_to_dict(loss.config)}


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in ``output_dir`` (named ``checkpoint-<step>`` with the metadata file), oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir()
             if (m := CHECKPOINT_RE.match(p.name)) and (p / CHECKPOINT_META).is_file()]
    return [p for _, p in sorted(found)]


def resolve_resume(resume_from: str | None, output_dir: Path, expected: dict, *,
                   argname: str = ARGNAME) -> tuple[Path, dict] | None:
    """The checkpoint to resume from and its metadata, verified against its manifest and checked against this
    run's model and scheduler (``expected``: :func:`checkpoint_meta`); None to start fresh (``resume_from`` None, or
    ``"latest"`` without any checkpoint in ``output_dir``)."""
    if resume_from is None:
        return None
    if resume_from == "latest":
        # the newest checkpoint-<step> entry, complete or not: skipping a damaged one would resume an older
        # checkpoint (or start over) and then overwrite the damaged one
        found = sorted((int(m.group(1)), p) for p in (output_dir.iterdir() if output_dir.is_dir() else ())
                       if (m := CHECKPOINT_RE.match(p.name)))
        if not found:
            return None
        path = found[-1][1]
        if not (path / CHECKPOINT_META).is_file():
            raise ValueError(f"{argname} latest: the newest checkpoint {path} is damaged (no {CHECKPOINT_META}; "
                             "complete checkpoints always have one). Move it away to resume from the one before, or "
                             "name a checkpoint folder")
    else:
        path = Path(resume_from)
        if not (path / CHECKPOINT_META).is_file():
            raise ValueError(f"{argname} {path}: not a complete ncml training checkpoint (no {CHECKPOINT_META})")
    meta = read_json(path / CHECKPOINT_META, argname=argname)
    if "checkpoint_format" in meta:
        verify_manifest(path, meta, argname=argname)
    for key in ("model_class", "model", "scheduler_class", "scheduler"):
        if meta.get(key) != expected[key]:
            theirs, ours = meta.get(key), expected[key]
            if isinstance(theirs, dict) and isinstance(ours, dict):
                diff = {k: (theirs.get(k), ours.get(k)) for k in sorted(set(theirs) | set(ours))
                        if theirs.get(k) != ours.get(k)}
            else:
                diff = (theirs, ours)
            raise ValueError(f"{argname} {path}: the checkpoint is from another {key.split('_')[0]} "
                             f"(differences, checkpoint vs this run: {diff})")
    return path, meta


def verify_manifest(folder: Path, meta: dict, *, argname: str = ARGNAME) -> None:
    """Every file the manifest lists exists with its recorded size and sha256; raises naming the first that does not."""
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError(f"{argname}: {folder / CHECKPOINT_META} has no file manifest ('files')")
    for name, entry in files.items():
        path = folder / name
        if Path(name).name != name or not isinstance(entry, dict):
            raise ValueError(f"{argname}: {folder / CHECKPOINT_META}: bad manifest entry {name!r}")
        if not path.is_file():
            raise ValueError(f"{argname}: {path} is missing (listed in {CHECKPOINT_META})")
        size = path.stat().st_size
        if size != entry.get("size"):
            raise ValueError(f"{argname}: {path} has {size} bytes, the manifest {entry.get('size')} "
                             "(truncated or replaced)")
        if _sha256(path) != entry.get("sha256"):
            raise ValueError(f"{argname}: {path} does not match its sha256 in {CHECKPOINT_META} "
                             "(corrupted or replaced)")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ---- writing ------------------------------------------------------------------------------------------------------
def save_checkpoint(accelerator, output_dir: Path, step: int, meta: dict, total_limit: int | None, *,
                    model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA) -> Path:
    """:func:`write_checkpoint` into a temporary folder, then an atomic rename to ``checkpoint-<step>``; with
    ``total_limit``, only the newest ``total_limit`` checkpoints are kept. Every process calls it.

    A failed write (a full disk, say) removes the temporary folder and leaves the earlier checkpoints as they were.
    """
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.incomplete"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # left over from a killed run
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        write_checkpoint(tmp, accelerator, step, meta, model=model, optimizer=optimizer, ema=ema)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _fsync_dir(tmp)
            if final.exists():  # the same step saved before (a rerun): swap, never delete first
                trash = output_dir / f".checkpoint-{step}.old"
                shutil.rmtree(trash, ignore_errors=True)
                os.replace(final, trash)
                os.replace(tmp, final)
                shutil.rmtree(trash)
            else:
                os.replace(tmp, final)
            _fsync_dir(output_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {e.filename or tmp} (checkpoint "
                          f"{final}); the incomplete checkpoint was removed and earlier ones are intact: free space "
                          "and rerun with --resume_from_checkpoint latest") from e
        raise
    if accelerator.is_main_process and total_limit is not None:
        for old in list_checkpoints(output_dir)[:-total_limit]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def write_checkpoint(folder: Path, accelerator, step: int, meta: dict, *, model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, ema: EMA) -> None:
    """Every process: its RNG states (JSON). The main process: live weights, EMA weights and the optimizer's tensors
    (safetensors), then ``ncml_checkpoint.json``: ``meta`` (:func:`checkpoint_meta`, plus a ``"data"`` dict whose
    ``examples_per_step`` gives ``examples_seen = step · examples_per_step``), the step, the EMA update count, the
    optimizer's hyper-parameters and non-tensor state, the grad scaler's state, and the manifest: every other file's
    size and sha256, checked before a resume loads anything."""
    write_file(folder / rng_file(accelerator.process_index), _json_bytes(get_rng_state(accelerator.device)))
    accelerator.wait_for_everyone()  # every process's RNG file is in the manifest
    if not accelerator.is_main_process:
        return
    write_file(folder / MODEL_FILE, _safetensors_bytes(model.state_dict()))
    write_file(folder / EMA_FILE, _safetensors_bytes(ema.shadow))
    state = optimizer.state_dict()  # {"state": {param index: {name: tensor or number}}, "param_groups": [...]}
    write_file(folder / OPTIMIZER_FILE, _safetensors_bytes({f"{i}.{k}": v for i, s in state["state"].items()
                                                            for k, v in s.items() if isinstance(v, torch.Tensor)}))
    scalars = {str(i): {k: v for k, v in s.items() if not isinstance(v, torch.Tensor)}
               for i, s in state["state"].items()}
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(folder.iterdir())}
    batch = meta["data"]["examples_per_step"]
    write_file(folder / CHECKPOINT_META, _json_bytes({
        **meta, "checkpoint_format": CHECKPOINT_FORMAT, "step": step,
        "data": {**meta["data"], "examples_seen": step * batch},  # the data order continues from here
        "ema_updates": ema.num_updates, "optimizer": {"param_groups": state["param_groups"], "state": scalars},
        "grad_scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None, "files": files},
        indent=1))


def write_file(path: Path, data: bytes) -> None:
    """Every checkpoint file is written here: a plain write, since the folder as a whole is renamed into place, and
    an fsync, so that the rename never publishes a folder whose data is not yet on disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()})  # clone: no shared storage


def _json_bytes(obj, indent: int | None = None) -> bytes:
    return (json.dumps(obj, indent=indent) + "\n").encode("utf-8")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- reading ------------------------------------------------------------------------------------------------------
def load_checkpoint(folder: Path, meta: dict, accelerator, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, ema: EMA, argname: str = ARGNAME) -> int:
    """Restore what :func:`write_checkpoint` wrote into ``model``, ``optimizer``, ``ema``, the grad scaler and this
    process's RNGs; returns the step. Files are parsed as data only (safetensors, JSON); nothing is unpickled.
    ``meta`` is the folder's ``ncml_checkpoint.json`` (from :func:`resolve_resume`, which verified the files)."""
    if "checkpoint_format" not in meta:
        return load_accelerate_checkpoint(folder, accelerator, model=model, optimizer=optimizer, ema=ema,
                                          argname=argname)
    step = meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{argname}: {folder / CHECKPOINT_META} has no valid step (got {step!r})")
    with _reading(folder / MODEL_FILE, argname):
        model.load_state_dict(load_safetensors(folder / MODEL_FILE))
    with _reading(folder / EMA_FILE, argname):
        ema.load(load_safetensors(folder / EMA_FILE), meta["ema_updates"])
    with _reading(folder / OPTIMIZER_FILE, argname):
        state = {}
        for key, v in load_safetensors(folder / OPTIMIZER_FILE).items():
            i, name = key.split(".", 1)
            state.setdefault(int(i), {})[name] = v
        for i, scalars in meta["optimizer"]["state"].items():
            state.setdefault(int(i), {}).update(scalars)
        groups = meta["optimizer"]["param_groups"]
        for live, saved in zip(optimizer.param_groups, groups):  # JSON has lists where torch keeps tuples (betas)
            saved.update({k: tuple(saved[k]) for k, v in live.items() if isinstance(v, tuple) and k in saved})
        _load_optimizer(optimizer, {"state": state, "param_groups": groups})
    if accelerator.scaler is not None and meta.get("grad_scaler") is not None:
        with _reading(folder / CHECKPOINT_META, argname):
            accelerator.scaler.load_state_dict(meta["grad_scaler"])
    path = folder / rng_file(accelerator.process_index)
    if path.name not in meta["files"]:
        raise ValueError(f"{argname}: {folder} was written by {meta['data']['num_processes']} process(es) and has no "
                         f"{path.name} for process {accelerator.process_index} of this run")
    with _reading(path, argname):
        set_rng_state(read_json(path, argname=argname), accelerator.device)
    return step


def _load_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict``, where a key that the live parameter groups have and a saved group lacks (a
    setting added to the groups since the checkpoint was written) keeps its live value instead of disappearing."""
    groups = state["param_groups"]
    for live, saved in zip(optimizer.param_groups, groups):
        for k, v in live.items():
            if k != "params":
                saved.setdefault(k, v)
    optimizer.load_state_dict(state)


def load_accelerate_checkpoint(folder: Path, accelerator, *, model: torch.nn.Module,
                               optimizer: torch.optim.Optimizer, ema: EMA, argname: str = ARGNAME) -> int:
    """A checkpoint of Accelerate's ``save_state`` with the EMA and the step registered (``custom_checkpoint_0.pkl``:
    ``{"shadow", "num_updates"}``, ``custom_checkpoint_1.pkl``: ``{"step"}``) and the live weights in
    ``model.safetensors``. Its pickles are read by Accelerate's loader with ``torch.load(weights_only=True)``, which
    rebuilds tensors, numbers, strings and numpy arrays only and refuses any other object instead of running its
    code. Returns the step."""
    from accelerate.utils import load

    def read(name: str, apply):
        with _reading(folder / name, argname):
            return apply(load(folder / name, map_location="cpu", weights_only=True))

    def restore_rng(rng: dict) -> None:
        py, npy, device = rng["random_state"], rng["numpy_random_seed"], accelerator.device
        state = {"python": [py[0], list(py[1]), py[2]], "numpy": [npy[0], npy[1].tolist(), *npy[2:]],
                 "torch": _hex(rng["torch_manual_seed"])}
        if (key := f"torch_{device.type}_manual_seed") in rng:
            state["device"] = {"type": device.type, "states": [_hex(s) for s in rng[key]]}
        set_rng_state(state, device)

    with _reading(folder / MODEL_FILE, argname):
        model.load_state_dict(load_safetensors(folder / MODEL_FILE))
    read("optimizer.bin", lambda state: _load_optimizer(optimizer, state))
    read("custom_checkpoint_0.pkl", lambda state: ema.load(state["shadow"], state["num_updates"]))
    if accelerator.scaler is not None and (folder / "scaler.pt").is_file():
        read("scaler.pt", accelerator.scaler.load_state_dict)
    read(f"random_states_{accelerator.process_index}.pkl", restore_rng)
    return read("custom_checkpoint_1.pkl", lambda state: int(state["step"]))


@contextlib.contextmanager
def _reading(path: Path, argname: str = ARGNAME):
    """Any failure while reading or applying ``path`` becomes one error that names the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{argname}: {path} is missing from the checkpoint")
    try:
        yield
    except (ValueError, TypeError, KeyError, IndexError, RuntimeError, OSError, pickle.UnpicklingError) as e:
        raise ValueError(f"{argname}: cannot restore {path}: {type(e).__name__}: {e}") from e


# ---- RNG states as JSON -----------------------------------------------------------------------------------------
# python's random and numpy's MT19937 as integer lists, torch's generators as hex bytes. Dropout draws from torch's
# global generator of the training device, so resuming restores it with the rest.
def get_rng_state(device: torch.device) -> dict:
    """The global RNG states (python, numpy, torch CPU, and ``device``'s generators unless it is the CPU) as JSON
    data."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": _hex(torch.get_rng_state())}
    backend = _device_rng(device)
    if backend is not None:
        state["device"] = {"type": device.type, "states": [_hex(s) for s in backend.get_rng_state_all()]}
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what :func:`get_rng_state` returned; a state without ``device``'s generators raises ``ValueError``."""
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    backend = _device_rng(device)
    if backend is not None and state.get("device", {}).get("type") != device.type:
        raise ValueError(f"no {device.type} RNG state (the checkpoint was written on another device type)")
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unhex(state["torch"]))
    if backend is not None:
        backend.set_rng_state_all([_unhex(s) for s in state["device"]["states"]])


def _device_rng(device: torch.device):
    """The RNG module of the training device (``torch.cuda``, ``torch.xpu``, …); None on the CPU."""
    module = getattr(torch, device.type, None) if device.type != "cpu" else None
    return module if hasattr(module, "get_rng_state_all") else None


def _hex(state: torch.Tensor) -> str:
    return state.cpu().numpy().tobytes().hex()


def _unhex(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray.fromhex(text), dtype=torch.uint8)


# ---- the metrics log ------------------------------------------------------------------------------------------------
def drop_metrics_after(metrics_file: Path, step: int) -> None:
    """Remove the rows of steps after ``step`` from a JSON-lines log (one object with an int ``"step"`` per line),
    and any line torn by a kill mid-write: a resumed run logs those steps again."""
    if not metrics_file.is_file():
        return
    kept = []
    for line in metrics_file.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
    atomic_write_text(metrics_file, "".join(kept))
