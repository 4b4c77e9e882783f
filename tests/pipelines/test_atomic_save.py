"""A pipeline save is atomic as a whole: a concurrent reader gets the old or the new pipeline, never a mix; a save
that crashes half-way leaves a folder that loads as the old pipeline or raises ``ConcurrentSaveError``; nothing but
the pipeline's own files is touched; folders without save ids (older saves, Hub repos) still load."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest
import torch
from gaussian_backbone import GaussianBackbone
from hub_testing import populate_hub_cache

from ncml import NCMLPipeline, VPSDEScheduler, hub_utils
from ncml.pipelines import pipeline_utils
from ncml.pipelines.pipeline_utils import ConcurrentSaveError
from ncml.pipelines.sampling_config import SamplingConfig

PIPELINE_FILES = {"model_index.json", "sampling_config.json", "README.md", "backbone", "scheduler"}


def make_pipeline(mu: float, t_max: float, t_start: float) -> NCMLPipeline:
    """A small, quick pipeline (a closed-form backbone); the two below differ in every piece: the backbone's config
    and weights, the scheduler and the sampling config."""
    scheduler = VPSDEScheduler(t_max=t_max)
    pipe = NCMLPipeline(GaussianBackbone.for_scheduler(scheduler, mu=mu), scheduler)
    pipe.sampling_config = SamplingConfig(t_start=t_start, num_inference_steps=3)
    return pipe


@pytest.fixture(scope="module")
def pipes():
    return {"one": make_pipeline(0.1, 0.1, 0.01), "two": make_pipeline(0.3, 0.2, 0.02)}


def which(loaded: NCMLPipeline, pipes: dict[str, NCMLPipeline]) -> str:
    """The name of the pipeline ``loaded`` equals exactly (weights, scheduler, sampling config); fails on a mix."""
    state = loaded.backbone.state_dict()
    for name, pipe in pipes.items():
        if (type(loaded.scheduler) is type(pipe.scheduler) and loaded.scheduler.config == pipe.scheduler.config
                and loaded.sampling_config == pipe.sampling_config
                and loaded.backbone.config == pipe.backbone.config
                and all(torch.equal(v, state[k]) for k, v in pipe.backbone.state_dict().items())):
            return name
    parts = {name: {"scheduler": loaded.scheduler.config == pipe.scheduler.config,
                    "sampling": loaded.sampling_config == pipe.sampling_config,
                    "weights": all(torch.equal(v, state[k]) for k, v in pipe.backbone.state_dict().items())}
             for name, pipe in pipes.items()}
    raise AssertionError(f"the loaded pipeline is a mix of the saved ones (which pieces match each): {parts}")


def tree(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder`` with its inode, size, mtime and (files) content."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (st.st_ino, st.st_size, st.st_mtime_ns,
                                           p.read_bytes() if p.is_file() else None)
    return out


def debris(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- (a) a reader while another process saves ---------------------------------------------------------
def write_alternately(pipes: list[NCMLPipeline], folder: Path, stop, saves, seconds: float) -> None:
    """The writer process: save the pipelines in turn into ``folder`` until ``stop`` is set."""
    torch.set_num_threads(1)
    end = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < end:
        pipes[saves.value % 2].save_pretrained(folder)
        saves.value += 1


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (a fresh "
                    "interpreter would spend its time importing torch)")
def test_a_reader_sees_one_saved_pipeline_or_the_other_never_a_mix(pipes, tmp_path):
    folder = tmp_path / "pipe"
    pipes["two"].save_pretrained(folder)
    context = multiprocessing.get_context("fork")
    stop, saves = context.Event(), context.Value("i", 0)
    writer = context.Process(target=write_alternately, args=([pipes["one"], pipes["two"]], folder, stop, saves, 60),
                             daemon=True)
    writer.start()
    try:
        start = time.monotonic()
        while saves.value < 2:
            assert writer.is_alive() and time.monotonic() < start + 30, "the writer process did not start saving"
            time.sleep(0.01)
        # at least 3 s, 10 saves and 60 loads (about 3 s on an idle machine; at most a minute on a busy one)
        seen, loads, start, first_save = {"one": 0, "two": 0}, 0, time.monotonic(), saves.value
        while (time.monotonic() < start + 3 or saves.value < first_save + 10 or loads < 60) \
                and time.monotonic() < start + 60:
            seen[which(NCMLPipeline.from_pretrained(folder), pipes)] += 1
            loads += 1
    finally:
        stop.set()
        writer.join(30)
    assert writer.exitcode == 0
    assert saves.value >= first_save + 5 and loads >= 20 and min(seen.values()) >= 1, (saves.value, loads, seen)
    assert which(NCMLPipeline.from_pretrained(folder), pipes) == ("one" if saves.value % 2 else "two")
    assert debris(folder) == []


def test_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "x").write_text("b")
    if not hub_utils.exchange_paths(a, b):
        pytest.skip("no atomic exchange on this OS or file system (the fallback of two renames is used)")
    assert (a / "x").read_text() == "b" and (b / "x").read_text() == "a"
    assert not hub_utils.exchange_paths(a, tmp_path / "missing")  # nothing to exchange with: False, unchanged
    assert (a / "x").read_text() == "b"


# ---- (b) a crash between the component swaps ------------------------------------------------------------
@pytest.fixture
def quick_retries(monkeypatch):
    monkeypatch.setattr(pipeline_utils, "LOAD_RETRY_DELAYS", (0.001, 0.002))


@pytest.fixture(params=["exchange", "two renames"])
def swap_mode(request, monkeypatch):
    """Folders are swapped with the atomic exchange (Linux), or with the fallback of two renames."""
    if request.param == "two renames":
        monkeypatch.setattr(hub_utils, "exchange_paths", lambda a, b: False)
    elif hub_utils._renameat2() is None:
        pytest.skip("no renameat2 here")
    return request.param


def crash_on_call(monkeypatch, module, name, n: int):
    """Make ``module.name`` raise on its ``n``-th call (1-based), as a crash there would stop the save."""
    original, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise KeyboardInterrupt(f"simulated crash in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def write_json_crashing_on(filename: str):
    original = hub_utils.write_json

    def write_json(path, obj):
        if Path(path).name == filename:
            raise KeyboardInterrupt(f"simulated crash before writing {filename}")
        return original(path, obj)

    return write_json


@pytest.mark.parametrize("crash", ["after the backbone swap", "after both swaps", "before model_index.json",
                                   "while staging", "in the middle of a swap"])
def test_a_crash_mid_save_never_leaves_a_folder_that_loads_as_a_mix(pipes, tmp_path, monkeypatch, quick_retries,
                                                                    swap_mode, crash):
    folder = tmp_path / "pipe"
    pipes["one"].save_pretrained(folder)
    with monkeypatch.context() as m:
        if crash == "after the backbone swap":
            crash_on_call(m, hub_utils, "swap_folder_into_place", 2)
        elif crash == "after both swaps":
            m.setattr(hub_utils, "write_json", write_json_crashing_on("sampling_config.json"))
        elif crash == "before model_index.json":
            m.setattr(hub_utils, "write_json", write_json_crashing_on("model_index.json"))
        elif crash == "while staging":
            crash_on_call(m, VPSDEScheduler, "save_pretrained", 1)
        else:  # the fallback's window: the old scheduler folder moved aside, the new one not yet in place
            if swap_mode == "exchange":
                pytest.skip("an exchange has no middle")
            original_rename, calls = os.rename, []

            def rename(src, dst):
                calls.append(dst)
                if Path(dst).name == "scheduler":
                    raise KeyboardInterrupt("simulated crash between the two renames")
                return original_rename(src, dst)

            m.setattr(os, "rename", rename)
        with pytest.raises(KeyboardInterrupt, match="simulated crash"):
            pipes["two"].save_pretrained(folder)
    try:
        loaded = NCMLPipeline.from_pretrained(folder)
    except (ConcurrentSaveError, FileNotFoundError) as e:
        assert crash not in ("while staging",)
        message = str(e)
        assert str(folder) in message
        if isinstance(e, ConcurrentSaveError):
            assert "being written" in message and "save the pipeline into the folder again" in message
    else:
        assert which(loaded, pipes) == "one"  # the old pipeline, never a mix
    if crash == "while staging":
        assert debris(folder) == []  # the staged folders were removed
    # a later save repairs the folder and clears what the crashed one left behind
    pipes["two"].save_pretrained(folder)
    assert which(NCMLPipeline.from_pretrained(folder), pipes) == "two"
    assert debris(folder) == [] and {p.name for p in folder.iterdir()} == PIPELINE_FILES


def test_files_of_different_saves_raise_the_clear_error(pipes, tmp_path, quick_retries):
    one, two = tmp_path / "one", tmp_path / "two"
    pipes["one"].save_pretrained(one)
    pipes["two"].save_pretrained(two)
    config = "scheduler/scheduler_config.json"
    (one / config).write_bytes((two / config).read_bytes())
    start = time.monotonic()
    with pytest.raises(ConcurrentSaveError, match=r"being written while it was read.*different saves") as info:
        NCMLPipeline.from_pretrained(one)
    assert str(one) in str(info.value) and "scheduler" in str(info.value)
    assert time.monotonic() - start < 5


# ---- (c) nothing but the pipeline's own files is touched ------------------------------------------------
def test_saves_touch_nothing_but_the_pipelines_files(pipes, tmp_path, monkeypatch, swap_mode):
    out = tmp_path / "run"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "model.safetensors").write_bytes(b"weights")
    (out / "checkpoint-3" / "ncml_checkpoint.json").write_text("{}")
    (out / "logs").mkdir()
    (out / "logs" / "x.txt").write_text("log line\n")
    (out / "samples").mkdir()
    (out / ".hidden-notes").write_text("mine")
    (out / ".backbone.tmp-not-a-save-id").mkdir()  # looks like a save's folder, but is not named like one
    (out / "notes.txt").write_text("keep me")
    before = tree(out)

    pipes["one"].save_pretrained(out)
    card = (out / "README.md").read_bytes()
    pipes["two"].save_pretrained(out)
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):  # and a crashed save
        crash_on_call(m, hub_utils, "swap_folder_into_place", 2)
        pipes["one"].save_pretrained(out)
    pipes["two"].save_pretrained(out)

    after = tree(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert {k.split(os.sep)[0] for k in set(after) - set(before)} == PIPELINE_FILES
    assert (out / "README.md").read_bytes() == card  # an existing model card is kept
    assert which(NCMLPipeline.from_pretrained(out), pipes) == "two"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_component_folders_and_files_get_the_usual_permissions(pipes, tmp_path):
    old = os.umask(0o002)
    try:
        pipes["one"].save_pretrained(tmp_path / "pipe")
        pipes["two"].save_pretrained(tmp_path / "pipe")
    finally:
        os.umask(old)
    for p in (tmp_path / "pipe").rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o775 if p.is_dir() else 0o664), p


# ---- (d) folders without save ids -----------------------------------------------------------------------
def strip_save_ids(folder: Path) -> None:
    for path in folder.rglob("*.json"):
        data = json.loads(path.read_text())
        assert data.pop("_save_id", None) is not None
        path.write_text(json.dumps(data, indent=2))


def save_like_an_older_version(pipe: NCMLPipeline, folder: Path) -> None:
    """What ``save_pretrained`` wrote before save ids: components in place, then the index, then the sampler."""
    for name, value in pipe.components.items():
        value.save_pretrained(folder / name)
    hub_utils.write_json(folder / "model_index.json", pipe._model_index())
    pipe.sampling_config.save(folder)


def test_a_folder_without_save_ids_still_loads(pipes, tmp_path):
    stripped, older = tmp_path / "stripped", tmp_path / "older"
    pipes["one"].save_pretrained(stripped)
    strip_save_ids(stripped)
    save_like_an_older_version(pipes["two"], older)
    assert "_save_id" not in (older / "model_index.json").read_text()
    assert which(NCMLPipeline.from_pretrained(stripped), pipes) == "one"
    assert which(NCMLPipeline.from_pretrained(older), pipes) == "two"
    pipes["one"].save_pretrained(older)  # a new save over an older folder
    assert which(NCMLPipeline.from_pretrained(older), pipes) == "one"


def test_a_component_saved_on_its_own_still_loads(pipes, tmp_path):
    folder = tmp_path / "pipe"
    pipes["one"].save_pretrained(folder)
    VPSDEScheduler(t_max=0.1, beta_max=10.0).save_pretrained(folder / "scheduler")  # no save id: not checked
    assert NCMLPipeline.from_pretrained(folder).scheduler.config.beta_max == 10.0


def test_hub_repos_load_with_and_without_save_ids(pipes, tmp_path, hub_cache):
    for name, strip in (("one", False), ("two", True)):
        folder = tmp_path / name
        pipes[name].save_pretrained(folder)
        if strip:
            strip_save_ids(folder)
        populate_hub_cache(folder, f"ncml-test/atomic-{name}", hub_cache)
        assert which(NCMLPipeline.from_pretrained(f"ncml-test/atomic-{name}", cache_dir=hub_cache), pipes) == name


def test_optional_pieces_may_be_missing(pipes, tmp_path):
    import shutil

    folder = tmp_path / "pipe"
    pipes["one"].save_pretrained(folder)
    (folder / "sampling_config.json").unlink()  # optional: the defaults
    assert NCMLPipeline.from_pretrained(folder).sampling_config == SamplingConfig()
    shutil.rmtree(folder / "scheduler")  # not read when replaced
    pipe = NCMLPipeline.from_pretrained(folder, scheduler=VPSDEScheduler(t_max=0.3))
    assert pipe.scheduler.t_max == 0.3  # no saved scheduler to compare with
