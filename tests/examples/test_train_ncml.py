"""examples/train_ncml.py on CPU with a tiny NCPN on the real digits data.

One module-scoped run set (three processes) covers: the documented ``accelerate launch`` command, the release
folder, a SIGKILL while a checkpoint is being written, and exact resume from the previous checkpoint in a new
process. Multi-process training runs two processes with ``accelerate.debug_launcher``.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from example_scripts import load_example
from ncml.training import checkpointing

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_ncml.py"

TINY_MODEL = {"_class_name": "NCPNModel", "sample_size": 8, "in_channels": 1, "nr_resnet": 1, "nr_filters": 8,
              "nr_logistic_mix": 2, "attention_heads": 2, "dropout": 0.1, "embedding_dim": 16}
TRAINING = {"dataset": "digits", "train_batch_size": 8, "eval_batch_size": 64, "eval_max_images": 64,
            "num_sample_images": 0, "logging_steps": 1, "eval_steps": 0, "seed": 3}


def load_script():
    return load_example("train_ncml")


@pytest.fixture(scope="module")
def script():
    return load_script()


def write_config(folder: Path, *, model=None, training=None, **sections) -> Path:
    cfg = {"model": {**TINY_MODEL, **(model or {})}, "scheduler": {"_class_name": "VPSDEScheduler"},
           "training": {**TRAINING, **(training or {})}, **sections}
    path = folder / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def run(cmd: list[str], *, check=True, timeout=300, threads=None) -> subprocess.CompletedProcess:
    threads = threads or os.environ.get("OMP_NUM_THREADS", "1")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "logs" / "metrics.jsonl").read_text().splitlines()]


def assert_same_state(a, b, path="state"):
    """Recursive bitwise equality of nested dicts / lists / tensors / numbers."""
    assert type(a) is type(b), path
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_same_state(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    else:
        assert a == b, path


def load_checkpoint_files(folder: Path) -> dict:
    """Everything a checkpoint restores (the configs and the file manifest left out)."""
    meta = json.loads((folder / "ncml_checkpoint.json").read_text())
    return {
        "model": load_file(folder / "model.safetensors"),
        "optimizer": load_file(folder / "optimizer.safetensors"), "optimizer_meta": meta["optimizer"],
        "ema": load_file(folder / "ema.safetensors"), "ema_updates": meta["ema_updates"],
        "step": meta["step"], "data": meta["data"], "grad_scaler": meta["grad_scaler"],
        "rng": json.loads((folder / "rng_state_0.json").read_text()),
    }


# ---- one uninterrupted run, one killed mid-checkpoint, and its resume in a new process -------------------------
KILL_DURING_SECOND_SAVE = textwrap.dedent("""
    import importlib.util, os, signal, sys
    import ncml.training.checkpointing as checkpointing
    spec = importlib.util.spec_from_file_location("train_ncml", sys.argv[1])
    script = sys.modules["train_ncml"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(script)
    original, calls = checkpointing.write_checkpoint, []
    def write_checkpoint(folder, *args, **kwargs):
        calls.append(folder)
        original(folder, *args, **kwargs)
        if len(calls) == 2:  # the checkpoint at step 4: tear a file, then die before the rename
            with open(os.path.join(folder, "model.safetensors"), "r+b") as f:
                f.truncate(64)
            os.kill(os.getpid(), signal.SIGKILL)
    checkpointing.write_checkpoint = write_checkpoint
    script.main(sys.argv[2:])
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("train")
    config = write_config(base)
    common = ["--config", str(config), "--max_train_steps", "4", "--checkpointing_steps", "2"]
    full, killed = base / "full", base / "killed"
    # the documented command line; keeps only the newest checkpoint
    run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), *common, "--output_dir", str(full),
         "--checkpoints_total_limit", "1", "--eval_steps", "2", "--num_sample_images", "2"])
    kill = run([sys.executable, "-c", KILL_DURING_SECOND_SAVE, str(SCRIPT), *common, "--output_dir", str(killed)],
               check=False)
    after_kill = sorted(p.name for p in killed.iterdir())
    resume = run([sys.executable, str(SCRIPT), *common, "--output_dir", str(killed),
                  "--resume_from_checkpoint", "latest"])
    return {"base": base, "config": config, "full": full, "killed": killed, "kill_rc": kill.returncode,
            "after_kill": after_kill, "resume_log": resume.stdout + resume.stderr}


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(runs):
    assert runs["kill_rc"] == -9
    # the torn write stayed in a hidden temporary folder; checkpoint-2 was complete and "latest" chose it
    assert runs["after_kill"] == [".checkpoint-4.incomplete", "checkpoint-2", "logs"]
    assert "resumed from" in runs["resume_log"] and "checkpoint-2 at step 2" in runs["resume_log"]
    names = [p.name for p in checkpointing.list_checkpoints(runs["killed"])]
    assert names == ["checkpoint-2", "checkpoint-4"]
    assert not (runs["killed"] / ".checkpoint-4.incomplete").exists()


def test_exact_resume_matches_the_uninterrupted_run_bitwise(runs):
    # 4 steps in one process vs 2 steps + a new process resuming from checkpoint-2 (dropout 0.1 on)
    a = load_checkpoint_files(runs["full"] / "checkpoint-4")
    b = load_checkpoint_files(runs["killed"] / "checkpoint-4")
    assert a["step"] == 4 and a["ema_updates"] == 4 and a["data"]["examples_seen"] == 4 * 8
    assert_same_state(a, b)
    # and the run really moved: the weights differ from the step-2 checkpoint
    two = load_file(runs["killed"] / "checkpoint-2" / "model.safetensors")
    assert any(not torch.equal(two[k], a["model"][k]) for k in two)
    # the logged losses of steps 3-4 are the same numbers too
    la = [r["train/loss"] for r in metrics(runs["full"]) if "train/loss" in r]
    lb = [r["train/loss"] for r in metrics(runs["killed"]) if "train/loss" in r]
    assert la[2:] == lb[-2:]


def test_checkpoints_total_limit_keeps_the_newest(runs):
    assert sorted(p.name for p in runs["full"].glob("checkpoint-*")) == ["checkpoint-4"]


def test_release_folder_loads_with_the_ema_weights(runs):
    NCMLPipeline = pytest.importorskip("ncml.pipelines").NCMLPipeline
    out = runs["full"]
    pipe = NCMLPipeline.from_pretrained(out)
    index = json.loads((out / "model_index.json").read_text())
    assert index["backbone"] == ["ncml", "NCPNModel"] and index["scheduler"] == ["ncml", "VPSDEScheduler"]
    ema = load_file(out / "checkpoint-4" / "ema.safetensors")
    released = dict(pipe.backbone.named_parameters())
    assert set(released) == set(ema)
    assert all(torch.equal(released[k].detach(), ema[k]) for k in ema)
    live = load_file(out / "checkpoint-4" / "model.safetensors")
    assert any(not torch.equal(live[k], ema[k]) for k in ema)  # EMA, not the live weights
    card = (out / "README.md").read_text()
    last_eval = [r for r in metrics(out) if "eval/bpd_t=0" in r][-1]
    assert "library_name: ncml" in card and "digits" in card and "steps: 4" in card
    assert f"{last_eval['eval/bpd_t=0']:.4f}" in card
    assert last_eval["step"] == 4 and 0 < last_eval["eval/bpd_t=0"] < 16
    assert sum("eval/bpd_t=0" in r for r in metrics(out)) == 2  # at step 2 (--eval_steps) and at the end
    for step in (2, 4):
        with Image.open(out / "samples" / f"step-{step}.png") as grid:  # 2 AR samples of 8×8 in one row
            assert grid.size == (16, 8) and grid.mode == "L"


def test_resuming_a_checkpoint_of_another_model_is_refused(runs, script, tmp_path):
    other = write_config(tmp_path, model={"nr_filters": 16})
    with pytest.raises(ValueError, match="another model.*nr_filters"):
        script.main(["--config", str(other), "--output_dir", str(tmp_path / "o"),
                     "--resume_from_checkpoint", str(runs["full"] / "checkpoint-4")])
    with pytest.raises(ValueError, match="not a complete ncml training checkpoint"):
        script.main(["--config", str(runs["config"]), "--output_dir", str(tmp_path / "o"),
                     "--resume_from_checkpoint", str(runs["killed"] / "logs")])


# ---- resuming never runs code from the checkpoint folder -------------------------------------------------------
CHECKPOINT_FILES = ["ema.safetensors", "model.safetensors", "ncml_checkpoint.json", "optimizer.safetensors",
                    "rng_state_0.json"]


class Payload:
    """Unpickling this creates the file ``marker``: the proof that code from a checkpoint ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant(path: Path, marker: Path, kind: str) -> None:
    if kind == "pickle":
        path.write_bytes(pickle.dumps(Payload(marker)))
    else:  # a zip holding the pickle, like Accelerate's optimizer.bin and random_states_0.pkl
        torch.save(Payload(marker), path)


def resume_command(runs, out: Path, checkpoint) -> list[str]:
    return [sys.executable, str(SCRIPT), "--config", str(runs["config"]), "--output_dir", str(out),
            "--max_train_steps", "4", "--checkpointing_steps", "2", "--resume_from_checkpoint", str(checkpoint)]


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_a_pickle_in_place_of_a_checkpoint_file_is_refused_and_never_run(runs, script, tmp_path, name, kind):
    checkpoint, marker = tmp_path / "checkpoint-2", tmp_path / "payload-ran"
    shutil.copytree(runs["killed"] / "checkpoint-2", checkpoint)
    assert sorted(p.name for p in checkpoint.iterdir()) == CHECKPOINT_FILES  # every file of a checkpoint is tried
    plant(checkpoint / name, marker, kind)
    with pytest.raises(ValueError, match=re.escape(str(checkpoint / name))):
        script.main(resume_command(runs, tmp_path / "o", checkpoint)[2:])
    assert not marker.exists()


def test_pickles_beside_a_checkpoint_are_never_loaded(runs, tmp_path):
    checkpoint, marker = tmp_path / "checkpoint-2", tmp_path / "payload-ran"
    shutil.copytree(runs["killed"] / "checkpoint-2", checkpoint)
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl", "optimizer.bin",
                 "pytorch_model.bin", "scaler.pt", "scheduler.bin"):
        plant(checkpoint / name, marker, "torch.save")
    run(resume_command(runs, tmp_path / "o", checkpoint))
    assert not marker.exists()
    assert_same_state(load_checkpoint_files(tmp_path / "o" / "checkpoint-4"),
                      load_checkpoint_files(runs["full"] / "checkpoint-4"))


# ---- damaged checkpoints: an error naming the file, never a silent non-exact resume ------------------------------
@pytest.mark.parametrize("damage", ["missing", "truncated", "replaced"])
@pytest.mark.parametrize("name", ["rng_state_0.json", "optimizer.safetensors", "ema.safetensors", "model.safetensors"])
def test_a_damaged_checkpoint_file_is_an_error_naming_it(runs, script, tmp_path, name, damage):
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(runs["killed"] / "checkpoint-2", checkpoint)
    path = checkpoint / name
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-7])
    else:  # same size, one byte changed: still parses, so only the manifest's sha256 tells
        data = bytearray(path.read_bytes())
        data[-3] ^= 1
        path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + {"missing": "missing", "truncated": "bytes",
                                                                        "replaced": "sha256"}[damage]):
        script.main(resume_command(runs, tmp_path / "o", checkpoint)[2:])
    assert not (tmp_path / "o").exists()  # refused before anything started


def test_latest_refuses_a_checkpoint_folder_without_its_metadata(runs, script, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(runs["killed"] / "checkpoint-2", out / "checkpoint-2")
    shutil.copytree(runs["killed"] / "checkpoint-4", out / "checkpoint-4")
    (out / "checkpoint-4" / "ncml_checkpoint.json").unlink()
    before = sorted(p.name for p in (out / "checkpoint-4").iterdir())
    with pytest.raises(ValueError, match=re.escape(str(out / "checkpoint-4")) + ".*damaged"):
        script.main(resume_command(runs, out, "latest")[2:])
    assert "starting a new run" not in capsys.readouterr().out
    assert sorted(p.name for p in (out / "checkpoint-4").iterdir()) == before  # left as it was


def test_disk_full_while_writing_a_checkpoint(runs, script, tmp_path, monkeypatch):
    out = tmp_path / "out"
    original = checkpointing.write_file

    def write_file(path, data):
        if path.parent.name == ".checkpoint-4.incomplete" and path.name == "optimizer.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        original(path, data)

    monkeypatch.setattr(checkpointing, "write_file", write_file)
    with pytest.raises(OSError, match="no space left on device.*" + re.escape(str(out / ".checkpoint-4.incomplete"))):
        script.main(resume_command(runs, out, "latest")[2:])
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "logs"]
    checkpointing.verify_manifest(out / "checkpoint-2",
                                  json.loads((out / "checkpoint-2" / "ncml_checkpoint.json").read_text()))


def test_resume_keeps_one_metrics_row_per_step(runs):
    # the killed run logged steps 3 and 4 before dying; its resume from step 2 logged them again
    steps = [r["step"] for r in metrics(runs["killed"]) if "train/loss" in r]
    assert steps == [1, 2, 3, 4]


TO_ACCELERATE_FORMAT = textwrap.dedent("""
    # rewrite a checkpoint as earlier versions of train_ncml.py wrote it: accelerator.save_state (pickles) with the
    # EMA and the step registered for checkpointing, and only the configs and the step in ncml_checkpoint.json
    import importlib.util, json, sys
    from pathlib import Path
    import torch
    from accelerate import Accelerator
    from ncml.training import EMA
    from ncml.training.checkpointing import load_checkpoint
    spec = importlib.util.spec_from_file_location("train_ncml", sys.argv[1])
    script = sys.modules["train_ncml"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(script)
    src, dst = Path(sys.argv[2]), Path(sys.argv[3])
    args, config = script.parse_args(sys.argv[4:])
    model, scheduler, loss_fn = script.build_components(config, args)
    accelerator = Accelerator()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2))
    model, optimizer = accelerator.prepare(model, optimizer)
    ema = EMA(model, args.ema_decay)
    meta = json.loads((src / "ncml_checkpoint.json").read_text())
    step = load_checkpoint(src, meta, accelerator, model=model, optimizer=optimizer, ema=ema)
    class Registered:
        def __init__(self, state): self.state = state
        def state_dict(self): return self.state
        def load_state_dict(self, state): pass
    accelerator.register_for_checkpointing(Registered({"decay": ema.decay, "num_updates": ema.num_updates,
                                                       "shadow": ema.shadow}))
    accelerator.register_for_checkpointing(Registered({"step": step}))
    accelerator.save_state(str(dst))
    old = ("model_class", "model", "scheduler_class", "scheduler", "loss", "step")
    (dst / "ncml_checkpoint.json").write_text(json.dumps({k: meta[k] for k in old}))
""")


def test_checkpoints_of_earlier_versions_resume_exactly_without_running_their_pickles(runs, tmp_path):
    out, marker = tmp_path / "earlier", tmp_path / "payload-ran"
    run([sys.executable, "-c", TO_ACCELERATE_FORMAT, str(SCRIPT), str(runs["killed"] / "checkpoint-2"),
         str(out / "checkpoint-2"), "--config", str(runs["config"])])
    assert {"custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "optimizer.bin", "random_states_0.pkl",
            "model.safetensors"} <= {p.name for p in (out / "checkpoint-2").iterdir()}
    # a payload in one of its pickles: torch.load(weights_only=True) refuses it
    poisoned = tmp_path / "poisoned" / "checkpoint-2"
    shutil.copytree(out / "checkpoint-2", poisoned)
    plant(poisoned / "custom_checkpoint_0.pkl", marker, "torch.save")
    proc = run(resume_command(runs, tmp_path / "o", poisoned), check=False)
    assert proc.returncode != 0 and str(poisoned / "custom_checkpoint_0.pkl") in proc.stderr
    assert not marker.exists()
    # the genuine one resumes bit-exactly, as "latest", and continues in the new format
    run(resume_command(runs, out, "latest"))
    assert_same_state(load_checkpoint_files(out / "checkpoint-4"), load_checkpoint_files(runs["full"] / "checkpoint-4"))


# ---- two processes ------------------------------------------------------------------------------------------
TWO_PROCESSES = textwrap.dedent("""
    import importlib.util, sys
    from accelerate import debug_launcher
    from safetensors.torch import save_file
    spec = importlib.util.spec_from_file_location("train_ncml", sys.argv[1])
    script = sys.modules["train_ncml"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(script)
    def train(argv, out):
        import torch.distributed as dist
        result = script.main(argv)
        rank = dist.get_rank() if dist.is_initialized() else 0
        save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
    debug_launcher(train, args=(sys.argv[3:], sys.argv[2]), num_processes=2)
""")


def test_two_processes_keep_identical_weights_and_double_the_batch(tmp_path):
    # class-conditional, so labels travel with the examples; no dropout, so runs can be compared across layouts
    config = write_config(tmp_path, model={"dropout": 0.0, "num_classes": 10})
    common = ["--config", str(config), "--max_train_steps", "3", "--checkpointing_steps", "0"]
    two, one, accumulated = tmp_path / "two", tmp_path / "one", tmp_path / "accumulated"
    run([sys.executable, "-c", TWO_PROCESSES, str(SCRIPT), str(tmp_path), *common, "--output_dir", str(two),
         "--train_batch_size", "4"], threads=1)  # one thread per process: CI has 2 cores
    run([sys.executable, str(SCRIPT), *common, "--output_dir", str(one), "--train_batch_size", "8"], threads=1)
    run([sys.executable, str(SCRIPT), *common, "--output_dir", str(accumulated), "--train_batch_size", "4",
         "--gradient_accumulation_steps", "2"], threads=1)
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # identical across ranks, bit for bit
    # 2 processes × 4 see the same 8 examples per step (and draws of t, ε) as 1 × 8 and as 1 × 4 × 2 accumulation
    losses = {name: [r["train/loss"] for r in metrics(d) if "train/loss" in r]
              for name, d in (("two", two), ("one", one), ("accumulated", accumulated))}
    assert len(losses["two"]) == 3
    np.testing.assert_allclose(losses["two"], losses["one"], rtol=1e-5)
    np.testing.assert_allclose(losses["accumulated"], losses["one"], rtol=1e-5)
    # weights agree up to float summation order, which Adam's g/√v can magnify where a gradient is ≈ 0:
    # the tolerance is well below one step's update (lr = 5e-4 per element)
    single = load_file(one / "checkpoint-3" / "model.safetensors")
    for k in single:
        torch.testing.assert_close(r0[k], single[k], rtol=1e-3, atol=1e-4)
    # the release of the 2-process run is a class-conditional pipeline
    index = json.loads((two / "model_index.json").read_text())
    assert index["_class_name"] == "NCMLClassConditionalPipeline"
    # each process wrote its RNG states into the checkpoint, and the manifest lists both
    files = json.loads((two / "checkpoint-3" / "ncml_checkpoint.json").read_text())["files"]
    assert {"rng_state_0.json", "rng_state_1.json"} <= set(files)


# ---- mixed precision ------------------------------------------------------------------------------------------
def bf16_run(tmp_path, steps, logging_steps=1):
    config = write_config(tmp_path)
    out = tmp_path / "bf16"
    run([sys.executable, str(SCRIPT), "--config", str(config), "--output_dir", str(out), "--max_train_steps",
         str(steps), "--checkpointing_steps", "0", "--mixed_precision", "bf16", "--logging_steps", str(logging_steps),
         "--learning_rate", "2e-3"], timeout=600)
    rows = [r for r in metrics(out) if "train/loss" in r]
    assert len(rows) == steps // logging_steps
    assert all(np.isfinite(r[k]) for r in rows for k in r)
    assert np.isfinite([v for r in metrics(out) for k, v in r.items() if k.startswith("eval/")]).all()
    return rows


def test_bf16_on_cpu_trains_without_nans(tmp_path):
    bf16_run(tmp_path, 3)


@pytest.mark.slow
def test_bf16_200_steps(tmp_path):
    rows = bf16_run(tmp_path, 200, logging_steps=20)  # each row: the mean over 20 steps
    for key in ("train/loss", "train/loss_t0", "train/loss_noisy"):
        print(f"bf16 {key} per 20 steps:", [round(r[key], 3) for r in rows])
    assert rows[-1]["train/loss_t0"] < rows[0]["train/loss_t0"]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]


# ---- your own images: a folder of mixed sizes and modes, a 🤗 dataset saved with save_to_disk -------------------
def mixed_images(n: int, seed: int = 0) -> list[Image.Image]:
    """RGBA, palette, grey and RGB images of sizes from 6×6 to 13×13, square or not."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (int(v) for v in rng.integers(6, 14, size=2))
        rgba = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
        out.append(rgba if i % 4 == 0 else rgba.convert(("P", "L", "RGB")[i % 4 - 1]))
    return out


def mixed_folder(folder: Path, n: int = 24, classes=("cat", "dog")) -> Path:
    """``n`` images of mixed sizes and modes in class subfolders, PNG and (for grey and RGB) JPEG."""
    for i, image in enumerate(mixed_images(n)):
        sub = folder / classes[i % len(classes)]
        sub.mkdir(parents=True, exist_ok=True)
        image.save(sub / f"{i}.{'jpg' if image.mode in ('L', 'RGB') and i % 3 else 'png'}")
    return folder


TINY_FLAGS = ["--max_train_steps", "2", "--checkpointing_steps", "0", "--train_batch_size", "4",
              "--eval_t_fractions", "0.5"]


@pytest.mark.parametrize("channels", [1, 3])
def test_trains_on_an_image_folder_of_mixed_sizes_and_modes(script, tmp_path, channels):
    folder = mixed_folder(tmp_path / "images")
    modes = {Image.open(p).mode for p in folder.rglob("*.*")}
    assert modes == {"RGBA", "P", "L", "RGB"} and {p.suffix for p in folder.rglob("*.*")} == {".png", ".jpg"}
    config = write_config(tmp_path, model={"in_channels": channels, "num_classes": 2}, training={"dataset": None})
    out = tmp_path / "o"
    result = script.main(["--config", str(config), "--train_data_dir", str(folder), "--output_dir", str(out),
                          "--random_flip", *TINY_FLAGS])
    assert result.step == 2 and np.isfinite(result.metrics["eval/bpd_t=0"])
    assert result.model.config.in_channels == channels and result.model.config.num_classes == 2
    assert "train/loss" in metrics(out)[-2]


def test_a_class_conditional_run_logs_the_held_out_accuracy_of_its_bayes_classifier(script, tmp_path):
    from ncml.evaluation import class_posterior

    config = write_config(tmp_path, model={"num_classes": 10})
    out = tmp_path / "cond"
    argv = ["--config", str(config), "--output_dir", str(out), "--eval_max_images", "40", *TINY_FLAGS]
    result = script.main(argv)
    accuracy = result.metrics["eval/bayes_accuracy_t=0"]
    # the same held-out digits through the public classifier, on the released (EMA) weights
    args, cfg = script.parse_args(argv)
    data = script.load_data(args, script.build_components(cfg, args)[0])
    assert len(data.eval_labels) == 40
    expected = (class_posterior(result.ema_model, data.eval_images, progress=False).argmax(1).numpy()
                == data.eval_labels).mean()
    assert accuracy == pytest.approx(expected, abs=1e-12) and accuracy * 40 == round(accuracy * 40)
    assert [r["step"] for r in metrics(out) if "eval/bayes_accuracy_t=0" in r] == [2]
    assert f"| bayes_accuracy_t=0 | {accuracy:.4f} |" in (out / "README.md").read_text()
    # an unconditional run has no classifier to report
    plain = script.main(["--config", str(write_config(tmp_path)), "--output_dir", str(tmp_path / "plain"),
                         *TINY_FLAGS])
    assert "eval/bayes_accuracy_t=0" not in plain.metrics


def test_hybrid_training_logs_the_classifier_loss_and_records_its_weight(script, tmp_path):
    config = write_config(tmp_path, model={"num_classes": 10, "dropout": 0.0})  # dropout would draw per row
    out = tmp_path / "hybrid"
    script.main(["--config", str(config), "--output_dir", str(out), "--eval_max_images", "20",
                 "--classifier_weight", "50", "--classifier_examples", "2", "--logging_steps", "1", *TINY_FLAGS])
    rows = [r for r in metrics(out) if "train/loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["train/classifier_loss"] > 0 for r in rows)  # −log p(y | x_t), nats, 2 examples per step
    # the term changes the update, not the draws: step 1's NLL equals that of the same run without it, step 2's not
    # (up to float32 rounding: the classifier rows make the forward batch larger)
    plain = script.main(["--config", str(config), "--output_dir", str(tmp_path / "mle"), "--eval_max_images", "20",
                         "--logging_steps", "1", *TINY_FLAGS])
    plain_rows = [r for r in metrics(tmp_path / "mle") if "train/loss" in r]
    assert "train/classifier_loss" not in plain_rows[0] and "eval/bayes_accuracy_t=0" in plain.metrics
    assert plain_rows[0]["train/loss"] == pytest.approx(rows[0]["train/loss"], rel=1e-6)
    assert plain_rows[1]["train/loss"] != pytest.approx(rows[1]["train/loss"], rel=1e-4), \
        (plain_rows[1]["train/loss"], rows[1]["train/loss"])
    assert "classifier_weight=50.0, classifier_examples=2" in (out / "README.md").read_text()
    with pytest.raises(ValueError, match="classifier_weight=50.0 needs a class-conditional backbone"):
        script.main(["--config", str(write_config(tmp_path)), "--output_dir", str(tmp_path / "plain"),
                     "--classifier_weight", "50", *TINY_FLAGS])


def test_trains_on_a_saved_hf_dataset_with_its_test_split(script, tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"picture": datasets.Image(), "digit": datasets.ClassLabel(num_classes=3)})
    train = datasets.Dataset.from_dict({"picture": mixed_images(12), "digit": [i % 3 for i in range(12)]}, features)
    test = datasets.Dataset.from_dict({"picture": mixed_images(3, 1), "digit": [0, 1, 2]}, features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "saved")
    config = write_config(tmp_path, model={"in_channels": 3, "num_classes": 3}, training={"dataset": None})
    out = tmp_path / "o"
    result = script.main(["--config", str(config), "--dataset_name", str(tmp_path / "saved"), "--image_column",
                          "picture", "--class_column", "digit", "--resolution", "6", "--center_crop",
                          "--output_dir", str(out), *TINY_FLAGS])
    assert result.step == 2 and np.isfinite(result.metrics["eval/bpd_t=0"])
    assert result.model.config.sample_size == 6  # --resolution sets the model's size
    assert json.loads((out / "backbone" / "config.json").read_text())["sample_size"] == 6
    card = (out / "README.md").read_text()
    assert "12 train / 3 held-out images" in card  # the test split, not a carve of train
    # one Dataset (no splits) saved to disk: 10 % of it is held out
    train.save_to_disk(tmp_path / "single")
    result = script.main(["--config", str(config), "--dataset_name", str(tmp_path / "single"), "--image_column",
                          "picture", "--class_column", "digit", "--output_dir", str(tmp_path / "p"), *TINY_FLAGS])
    assert result.step == 2 and "11 train / 1 held-out images" in (tmp_path / "p" / "README.md").read_text()


@pytest.mark.parametrize("model, flags, match", [
    ({}, ["--image_column", "picture", "--class_column", "digit"], "--class_column digit: the model is unconditional"),
    ({}, ["--image_column", "image"], r"split 'train': no image column 'image'; the columns are \['picture', "),
    ({"num_classes": 3}, ["--image_column", "picture"], r"\(num_classes=3\): name the class column with --class"),
    ({}, ["--image_column", "picture", "--dataset_config_name", "x"], "saved with save_to_disk"),
])
def test_bad_hf_dataset_flags(script, tmp_path, model, flags, match):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"picture": mixed_images(3), "digit": [0, 1, 2]}).save_to_disk(tmp_path / "saved")
    config = write_config(tmp_path, model=model, training={"dataset": None})
    with pytest.raises(ValueError, match=f"^--dataset_name {re.escape(str(tmp_path / 'saved'))}: .*{match}"):
        script.main(["--config", str(config), "--dataset_name", str(tmp_path / "saved"), "--output_dir",
                     str(tmp_path / "o"), *flags])
    assert not (tmp_path / "o").exists()


def test_data_flags_that_do_not_fit_together(script, tmp_path):
    config = write_config(tmp_path)  # its training section names --dataset digits
    base = ["--config", str(config), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="--class_column needs --dataset_name"):
        script.main(base + ["--class_column", "label"])
    with pytest.raises(ValueError, match="--dataset_name and --train_data_dir are exclusive"):
        script.main(base + ["--dataset_name", "x", "--train_data_dir", "y"])
    with pytest.raises(ValueError, match="--dataset_name .*missing: cannot load the dataset"):
        script.main(base + ["--dataset_name", str(tmp_path / "missing")])  # replaces the config's --dataset
    with pytest.raises(ValueError, match="digits: images are 8×8 .*sample_size=12 .*--resolution 12"):
        script.main(base + ["--config", str(write_config(tmp_path, model={"sample_size": 12}))])
    assert not (tmp_path / "o").exists()


def test_random_crops_and_flips_resume_exactly(script, tmp_path):
    folder = mixed_folder(tmp_path / "images", n=20, classes=("all",))
    config = write_config(tmp_path, training={"dataset": None})
    common = ["--config", str(config), "--train_data_dir", str(folder), "--max_train_steps", "4",
              "--checkpointing_steps", "2", "--train_batch_size", "4", "--random_flip"]
    full, resumed, plain = tmp_path / "full", tmp_path / "resumed", tmp_path / "plain"
    script.main(common + ["--output_dir", str(full)])
    shutil.copytree(full / "checkpoint-2", resumed / "checkpoint-2")
    script.main(common + ["--output_dir", str(resumed), "--resume_from_checkpoint", "latest"])
    assert_same_state(load_checkpoint_files(full / "checkpoint-4"), load_checkpoint_files(resumed / "checkpoint-4"))
    # the crops and flips changed what was trained on: the same run with centre crops and no flips differs
    script.main([a for a in common if a != "--random_flip"] + ["--center_crop", "--output_dir", str(plain)])
    assert [r["train/loss"] for r in metrics(full) if "train/loss" in r] != \
        [r["train/loss"] for r in metrics(plain) if "train/loss" in r]


def test_every_bundled_dataset_has_a_config_that_trains(script, tmp_path):
    from ncml.data import DATASETS

    configs = {"mnist5k": "ncpn_mnist_vp.json", "digits": "ncpn_digits_vp.json"}
    assert set(configs) == set(DATASETS)
    for name, file in configs.items():
        args, config = script.parse_args(["--config", str(ROOT / "examples" / "configs" / file), "--dataset", name])
        model, _, _ = script.build_components(config, args)
        data = script.load_data(args, model)
        assert data.train_images.shape[1:] == (model.config.sample_size,) * 2 + (model.config.in_channels,)
    # the README's command line with --dataset digits, shortened
    out = tmp_path / "digits"
    result = script.main(["--config", str(ROOT / "examples" / "configs" / "ncpn_digits_vp.json"), "--output_dir",
                          str(out), "--max_train_steps", "1", "--checkpointing_steps", "0", "--eval_max_images", "16",
                          "--num_sample_images", "0"])
    assert result.step == 1 and np.isfinite(result.metrics["eval/bpd_t=0"])


# ---- bad input: a clear error before training starts --------------------------------------------------------------
def save_pngs(folder: Path, shapes, mode="L"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, shape in enumerate(shapes):
        Image.fromarray(np.zeros(shape, dtype=np.uint8), mode=mode).save(folder / f"{i}.png")


@pytest.mark.parametrize("case, match", [
    ("missing_folder", "train_data_dir.*not a folder"),
    ("empty_folder", "train_data_dir.*holds no"),
    ("broken_file", r"--train_data_dir .*images: .*2\.png: cannot read the image"),
    ("truncated_jpeg", r"--train_data_dir .*images: .*1\.jpg: cannot read the image.*truncated"),
    ("one_image", "at least 2 images"),
])
def test_bad_image_folder(script, tmp_path, case, match):
    config = write_config(tmp_path, training={"dataset": None})
    folder = tmp_path / "images"
    if case == "empty_folder":
        folder.mkdir()
    elif case == "broken_file":
        save_pngs(folder, [(8, 8), (8, 8)])
        (folder / "2.png").write_bytes(b"\x89PNG\r\n not really")
    elif case == "truncated_jpeg":
        save_pngs(folder, [(8, 8)])
        photo = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(photo).save(folder / "1.jpg")
        (folder / "1.jpg").write_bytes((folder / "1.jpg").read_bytes()[:1500])
    elif case == "one_image":
        save_pngs(folder, [(8, 8)])
    with pytest.raises(ValueError, match=match):
        script.main(["--config", str(config), "--train_data_dir", str(folder), "--output_dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()  # nothing started


@pytest.mark.parametrize("change, match", [
    (dict(model={"in_channels": 3}), "1 channel.*in_channels=3"),
    (dict(model={"sample_size": 12}), "8×8.*sample_size=12"),
    (dict(model={"nr_filterz": 8}), "unknown key.*nr_filterz"),
    (dict(training={"learning_rat": 1e-3}), "unknown key.*learning_rat"),
    (dict(training={"train_batch_size": "8"}), "training.train_batch_size: expected int, got '8'"),
    (dict(training={"eval_t_fractions": [0.1, "0.5"]}), "eval_t_fractions.*expected float"),
    (dict(training={"lr_scheduler": "linear"}), r"--lr_scheduler must be one of \['constant', 'cosine'\]"),
    (dict(training={"max_grad_norm": -1}), "--max_grad_norm must be >= 0"),
    (dict(loss={"clean_fraction": "0.5"}), "'loss'.*clean_fraction: expected float"),
    (dict(training={"dataset": "cifar10"}), "dataset must be one of"),
    (dict(loss={"clean_fractoin": 0.5}), "unknown key.*clean_fractoin"),
    (dict(optimizer={}), "unknown top-level key.*optimizer"),
    (dict(scheduler={"_class_name": "NotAScheduler"}), "NotAScheduler"),
    (dict(training={"train_batch_size": 4000}), "fewer than one batch"),
    (dict(training={"dataset": None}), "--dataset.*--train_data_dir"),
])
def test_bad_config(script, tmp_path, change, match):
    config = write_config(tmp_path, **change)
    with pytest.raises((ValueError, TypeError), match=match):
        script.main(["--config", str(config), "--output_dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, match", [
    (["--max_grad_norm", "nan"], "--max_grad_norm must be a finite number, got nan"),
    (["--max_grad_norm", "inf"], "--max_grad_norm must be a finite number, got inf"),
    (["--max_grad_norm", "-1"], "--max_grad_norm must be >= 0, got -1"),
    (["--learning_rate", "nan"], "--learning_rate must be a finite number, got nan"),
    (["--learning_rate", "inf"], "--learning_rate must be a finite number, got inf"),
    (["--learning_rate", "0"], "--learning_rate must be > 0, got 0"),
    (["--adam_beta2", "1"], r"--adam_beta2 must lie in \[0, 1\), got 1"),
    (["--adam_weight_decay", "-0.1"], "--adam_weight_decay must be >= 0"),
    (["--t_max", "nan"], "--t_max must be a finite number"),
    (["--seed", "-1"], r"--seed must be an integer in \[0, 4294967295\), got -1"),
    (["--seed", str(2**32)], "--seed must be an integer"),
])
def test_bad_numbers_are_refused_before_training(script, tmp_path, flags, match):
    config = write_config(tmp_path)
    with pytest.raises(ValueError, match=match):
        script.main(["--config", str(config), "--output_dir", str(tmp_path / "o"), *flags])
    assert not (tmp_path / "o").exists()


def test_an_output_dir_that_is_a_file_or_a_config_that_is_not_utf8_is_refused(script, tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "o").write_text("a file")
    with pytest.raises(ValueError, match="--output_dir .*o: exists and is not a folder"):
        script.main(["--config", str(config), "--output_dir", str(tmp_path / "o")])
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(json.dumps({"model": TINY_MODEL, "training": {**TRAINING, "dataset": None,
                                   "train_data_dir": "Bilder/Zürich"}}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(ValueError, match="--config.*latin1.json is not UTF-8"):
        script.main(["--config", str(latin1), "--output_dir", str(tmp_path / "p")])
    assert not (tmp_path / "p").exists()


def test_the_ablation_command_lines_parse(script):
    # examples/ablate_noise_levels.py runs this script; every variant's flags keep their meaning
    ablation = load_example("ablate_noise_levels")
    for variant in ablation.VARIANTS:
        command = ablation.train_command(variant, Path("/nonexistent/out"), 600, 200)
        assert command[1] == str(ROOT / "examples" / "train_ncml.py")
        args, config = script.parse_args(command[2:])
        assert (args.dataset, args.validation_split, args.resume_from_checkpoint, args.checkpoints_total_limit,
                args.num_sample_images, args.eval_steps, args.max_train_steps) == ("mnist5k", True, "latest", 1, 0,
                                                                                   200, 600)
        assert args.init_from == str(ablation.init_pipeline(variant)) and "model" in config
        flags = {a: b for a, b in zip(command, command[1:]) if a.startswith("--") and not b.startswith("--")}
        assert args.t_max == float(flags["--t_max"]) and args.clean_fraction == float(flags["--clean_fraction"])
        assert args.noise_distribution == flags.get("--noise_distribution")


def test_help_lists_every_flag_with_its_default(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for f in dataclasses.fields(script.TrainingConfig):
        assert f"--{f.name}" in text
    assert "(default: 0.0005)" in text and "(default: (0.01, 0.1, 0.5))" in text


def test_report_to_a_tracker_that_is_not_installed_is_an_error_at_start(script, tmp_path):
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    base = ["--config", str(write_config(tmp_path)), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="--report_to must be 'none' or Accelerate trackers.*got 'tensorbored'"):
        script.main(base + ["--report_to", "tensorbored"])
    missing = [n for n in LoggerType.list() if n != "all" and LoggerType(n) not in get_available_trackers()]
    if not missing:
        pytest.skip("every Accelerate tracker is installed")
    with pytest.raises(ValueError, match=f"--report_to {missing[0]}: the tracker's package is not installed"):
        script.main(base + ["--report_to", missing[0]])
    assert not (tmp_path / "o").exists()


@pytest.fixture
def fake_hub(monkeypatch):
    """The Hub's API as seen by huggingface_hub.HfApi: a token with ``role``, repos created, folders uploaded."""
    import huggingface_hub

    hub = {"role": "write", "error": None, "upload_error": None, "created": [], "uploaded": []}

    def whoami(self, *args, **kwargs):
        if hub["error"] is not None:
            raise hub["error"]
        return {"name": "someone", "auth": {"accessToken": {"role": hub["role"]}}}

    def create_repo(self, repo_id, **kwargs):
        hub["created"].append(repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        if hub["upload_error"] is not None:
            raise hub["upload_error"]
        hub["uploaded"].append((repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    for name, fn in (("whoami", whoami), ("create_repo", create_repo), ("upload_folder", upload_folder)):
        monkeypatch.setattr(huggingface_hub.HfApi, name, fn)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return hub


def test_push_to_hub_checks_the_token_and_the_repo_before_training(script, tmp_path, fake_hub):
    from huggingface_hub.errors import LocalTokenNotFoundError

    from ncml.hub_utils import HubConnectionError

    out = tmp_path / "o"
    argv = ["--config", str(write_config(tmp_path)), "--output_dir", str(out), "--max_train_steps", "1",
            "--push_to_hub", "--hub_model_id", "someone/tiny"]
    fake_hub["error"] = ConnectionError("Failed to resolve 'huggingface.co'")
    with pytest.raises(HubConnectionError, match="could not be reached to check repo 'someone/tiny'.*nothing was"):
        script.main(argv)
    fake_hub["error"] = LocalTokenNotFoundError("no token")
    with pytest.raises(ValueError, match="--push_to_hub: no Hugging Face token.*'someone/tiny'"):
        script.main(argv)
    fake_hub["error"], fake_hub["role"] = None, "read"
    with pytest.raises(ValueError, match="--push_to_hub: the Hugging Face token is read-only"):
        script.main(argv)
    assert not out.exists() and not fake_hub["created"]  # refused before anything started
    fake_hub["role"] = "write"
    script.main(argv)
    assert fake_hub["created"][0] == "someone/tiny"
    repo_id, files = fake_hub["uploaded"][-1]
    assert repo_id == "someone/tiny"
    assert {"model_index.json", "backbone", "scheduler", "sampling_config.json", "README.md"} <= set(files)
    assert not any(name.startswith("checkpoint") or name == "logs" for name in files)
    # the network fails at the end: one message that says where the trained pipeline is
    fake_hub["upload_error"] = ConnectionError("Connection reset by peer")
    with pytest.raises(HubConnectionError, match=f"'someone/tiny'.*saved in {re.escape(str(out))}: upload it later"):
        script.main(argv)


def test_bad_flags(script, tmp_path):
    config = write_config(tmp_path)
    base = ["--config", str(config), "--output_dir", str(tmp_path / "o")]
    with pytest.raises(ValueError, match="clean_fraction"):
        script.main(base + ["--clean_fraction", "1.5"])
    with pytest.raises(ValueError, match="sde.*contradicts"):
        script.main(base + ["--sde", "ve"])
    with pytest.raises(ValueError, match="max_train_steps"):
        script.main(base + ["--max_train_steps", "0"])
    with pytest.raises(ValueError, match="no such file"):
        script.main(["--config", str(tmp_path / "nope.json"), "--dataset", "digits"])
    with pytest.raises(SystemExit):  # argparse: not one of the datasets
        script.main(base + ["--dataset", "cifar10"])
    assert not (tmp_path / "o").exists()
