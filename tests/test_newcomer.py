"""What a new user (often coming from 🤗 diffusers) runs into first: the install, file permissions, Hub errors
without a network, diffusers habits, the licence. All offline: the Hub is mocked, the Makefile only dry-run."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "pipelines"))
from gaussian_backbone import GaussianBackbone  # noqa: E402

from ncml import NCMLPipeline, VESDEScheduler, VPSDEScheduler  # noqa: E402
from ncml import hub_utils  # noqa: E402
from ncml.hub_utils import HubConnectionError, HubSnapshotNotCachedError  # noqa: E402
from ncml.pipelines import NCMLPipelineOutput  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---- 1. make: which PyTorch it installs -----------------------------------------------------------------
def torch_install_line(tmp_path, *make_args, nvidia_smi: str | None) -> str:
    """The arguments of the ``pip install … torch`` that ``make`` would run for a fresh venv (``make -n``: nothing
    runs).

    ``nvidia_smi``: the output of a fake ``nvidia-smi -L`` that succeeds, or ``None`` for one that fails (no GPU).
    """
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    script = f"#!/bin/sh\necho '{nvidia_smi}'\n" if nvidia_smi is not None else "#!/bin/sh\nexit 9\n"
    (fake_bin / "nvidia-smi").write_text(script)
    (fake_bin / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCH", "MAKE"))}
    env["PATH"] = f"{fake_bin}{os.pathsep}{env.get('PATH', '')}"
    venv = tmp_path / "venv"
    result = subprocess.run(["make", "-n", "-B", f"VENV={venv}", *make_args, f"{venv}/.installed"], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=True)
    lines = [line for line in result.stdout.splitlines() if "-m pip install" in line and '"torch' in line]
    assert len(lines) == 1, result.stdout
    return lines[0].split("-m pip install", 1)[1].split("||", 1)[0]  # the options and the requirement


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
needs_linux = pytest.mark.skipif(platform.system() != "Linux", reason="the CPU index is chosen on Linux only")


@needs_make
@needs_linux
def test_make_installs_the_cpu_build_without_an_nvidia_gpu(tmp_path):
    line = torch_install_line(tmp_path, nvidia_smi=None)
    assert "--index-url https://download.pytorch.org/whl/cpu" in line and '"torch"' in line


@needs_make
def test_make_installs_the_default_build_with_an_nvidia_gpu(tmp_path):
    line = torch_install_line(tmp_path, nvidia_smi="GPU 0: NVIDIA H100 (UUID: GPU-0)")
    assert "--index-url" not in line and '"torch"' in line


@needs_make
@pytest.mark.parametrize("nvidia_smi", [None, "GPU 0: NVIDIA H100"])
def test_an_explicit_torch_requirement_uses_no_extra_index(tmp_path, nvidia_smi):
    """CI's ``make test TORCH=torch==2.13.0`` must install from the configured indexes only."""
    line = torch_install_line(tmp_path, "TORCH=torch==2.13.0", nvidia_smi=nvidia_smi)
    assert "index" not in line and '"torch==2.13.0"' in line
    line = torch_install_line(tmp_path, "TORCH=torch>=2.4,<3", nvidia_smi=nvidia_smi)
    assert '"torch>=2.4,<3"' in line  # quoted: no shell redirection


@needs_make
def test_torch_index_chooses_the_index(tmp_path):
    assert "index" not in torch_install_line(tmp_path, "TORCH_INDEX=", nvidia_smi=None)
    line = torch_install_line(tmp_path, "TORCH_INDEX=--index-url https://download.pytorch.org/whl/cu126",
                              nvidia_smi=None)
    assert "--index-url https://download.pytorch.org/whl/cu126" in line and "whl/cpu" not in line


def test_ci_and_readme_keep_their_commands():
    assert "make test TORCH=torch==2.13.0" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text().splitlines()
    assert readme[3].startswith("make demo ") and readme[4].startswith("make test ")
    install = "\n".join(readme).split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "TORCH_INDEX" in install and "download.pytorch.org/whl/cpu" in install


# ---- 2. saved files get open()'s permissions, not mkstemp's 0600 ----------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_saved_files_get_the_permissions_of_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        hub_utils.atomic_write_text(tmp_path / "a.txt", "x")
        hub_utils.write_json(tmp_path / "b.json", {"a": 1})
        hub_utils.atomic_write(tmp_path / "c.bin", lambda f: f.write(b"\0"))
        hub_utils.atomic_write_text(tmp_path / "a.txt", "overwritten")
        scheduler = VPSDEScheduler()
        NCMLPipeline(GaussianBackbone.for_scheduler(scheduler), scheduler).save_pretrained(tmp_path / "pipe")
        with open(tmp_path / "reference", "w"):
            pass
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "reference").stat().st_mode) == expected
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 8
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(expected)}, modes
    assert not [p for p in files if p.name.endswith(".tmp")]


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    hub_utils.atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError, match="disk full"):
        hub_utils.atomic_write(tmp_path / "a.txt", fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "old"


# ---- 3. the Hub out of reach ----------------------------------------------------------------------------
def connect_error(message: str = "[Errno -3] Temporary failure in name resolution") -> Exception:
    """The error huggingface_hub's HTTP client raises when the host cannot be reached."""
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        return module.ConnectError(message)
    import requests

    return requests.exceptions.ConnectionError(message)


def http_error(cls, status: int, url: str = "https://huggingface.co/api/models/org/name"):
    """``cls`` (an ``HfHubHTTPError`` subclass) as huggingface_hub raises it, with a response of ``status``."""
    for name in ("httpx2", "httpx"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        response = module.Response(status, request=module.Request("GET", url))
        break
    else:
        import requests

        response = requests.Response()
        response.status_code, response.url = status, url
    return cls(f"{status} Client Error for url: {url}", response=response)


@pytest.fixture
def unreachable_upload(monkeypatch):
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(repo_id)
        raise connect_error()

    def upload_folder(self, **kwargs):
        raise AssertionError("upload_folder reached after create_repo failed")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_without_network_says_so(unreachable_upload):
    scheduler = VPSDEScheduler()
    pipe = NCMLPipeline(GaussianBackbone.for_scheduler(scheduler), scheduler)
    for component, repo_id in ((pipe, "org/tiny-pipe"), (scheduler, "org/tiny-sched")):
        with pytest.raises(HubConnectionError) as info:
            component.push_to_hub(repo_id)
        message = str(info.value)
        assert f"repo_id={repo_id!r}" in message and "Hub could not be reached" in message
        assert "ConnectError" in message and "Temporary failure in name resolution" in message
        assert isinstance(info.value, ConnectionError) and info.value.__cause__ is not None
    assert unreachable_upload == ["org/tiny-pipe", "org/tiny-sched"]


def test_push_to_hub_names_the_repo_and_a_timeout(monkeypatch):
    def create_repo(self, repo_id, **kwargs):
        raise TimeoutError("timed out")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    with pytest.raises(HubConnectionError, match=r"repo_id='org/tiny'.*could not be reached \(TimeoutError"):
        VPSDEScheduler().push_to_hub("org/tiny")


def test_push_to_hub_in_offline_mode_says_so(monkeypatch):
    from huggingface_hub.errors import OfflineModeIsEnabled

    def create_repo(self, repo_id, **kwargs):
        raise OfflineModeIsEnabled("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    with pytest.raises(HubConnectionError, match=r"repo_id='org/tiny'.*offline mode.*HF_HUB_OFFLINE"):
        VPSDEScheduler().push_to_hub("org/tiny")


def test_http_errors_of_an_upload_are_not_called_network_errors(monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    def create_repo(self, repo_id, **kwargs):
        raise http_error(HfHubHTTPError, 401)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    with pytest.raises(HfHubHTTPError):
        VPSDEScheduler().push_to_hub("org/tiny")


def fake_snapshot_download(monkeypatch, error: BaseException, cause: BaseException | None = None):
    """Make ``snapshot_download`` raise ``error`` (from ``cause``), as huggingface_hub does."""

    def snapshot_download(repo_id, **kwargs):
        if cause is None:
            raise error
        raise error from cause

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    if hasattr(huggingface_hub.constants, "is_offline_mode"):
        monkeypatch.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)


def test_from_pretrained_with_the_network_unreachable(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    fake_snapshot_download(monkeypatch, LocalEntryNotFoundError("cannot find the snapshot"), connect_error())
    with pytest.raises(HubSnapshotNotCachedError) as info:
        NCMLPipeline.from_pretrained("org/name")
    message = str(info.value)
    assert "'org/name'" in message and "could not be reached" in message and "ConnectError" in message
    assert "not in the local Hub cache" in message and "not found on the Hub" not in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ConnectionError)
    with pytest.raises(HubSnapshotNotCachedError, match="could not be reached"):
        VPSDEScheduler.from_pretrained("org/name")


def test_a_network_error_during_the_download_is_named(monkeypatch):
    fake_snapshot_download(monkeypatch, connect_error("connection reset"))
    with pytest.raises(HubSnapshotNotCachedError, match=r"'org/name'.*could not be reached.*connection reset"):
        VPSDEScheduler.from_pretrained("org/name")


def test_from_pretrained_of_a_missing_repository(monkeypatch):
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    fake_snapshot_download(monkeypatch, http_error(RepositoryNotFoundError, 404))
    with pytest.raises(FileNotFoundError, match=r"'org/name'.*repository was not found on the Hub.*token") as info:
        NCMLPipeline.from_pretrained("org/name")
    assert not isinstance(info.value, ConnectionError)
    fake_snapshot_download(monkeypatch, http_error(GatedRepoError, 403))
    with pytest.raises(FileNotFoundError, match="private or gated"):
        NCMLPipeline.from_pretrained("org/name")
    fake_snapshot_download(monkeypatch, http_error(RevisionNotFoundError, 404))
    with pytest.raises(FileNotFoundError, match="has no revision 'v2'"):
        NCMLPipeline.from_pretrained("org/name", revision="v2")


def test_from_pretrained_when_the_hub_answers_with_an_error(monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    fake_snapshot_download(monkeypatch, LocalEntryNotFoundError("cannot find the snapshot"),
                           http_error(HfHubHTTPError, 503))
    with pytest.raises(FileNotFoundError, match=r"'org/name'.*answered with an error \(HTTP 503") as info:
        NCMLPipeline.from_pretrained("org/name")
    assert not isinstance(info.value, ConnectionError)


def test_cache_only_loads_say_why(hub_cache, monkeypatch):
    """Real ``snapshot_download`` on an empty cache: nothing is mocked but the environment."""
    # local_files_only=True with offline mode off: only local_files_only is to blame
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    if hasattr(huggingface_hub.constants, "is_offline_mode"):
        monkeypatch.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)
    with pytest.raises(FileNotFoundError) as info:
        NCMLPipeline.from_pretrained("org/name", cache_dir=hub_cache, local_files_only=True)
    message = str(info.value)
    assert "local_files_only=True" in message and str(hub_cache) in message
    assert "HF_HUB_OFFLINE" not in message and "not found on the Hub" not in message
    assert not isinstance(info.value, ConnectionError)

    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if hasattr(huggingface_hub.constants, "is_offline_mode"):
        monkeypatch.setattr(huggingface_hub.constants, "is_offline_mode", lambda: True)
    with pytest.raises(FileNotFoundError) as info:
        VPSDEScheduler.from_pretrained("org/name", cache_dir=hub_cache)
    message = str(info.value)
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in message and "local_files_only=True" not in message
    assert "not in the local Hub cache" in message


# ---- 4. diffusers habits: configs -----------------------------------------------------------------------
def test_configs_are_subscriptable_by_field_name():
    scheduler = VESDEScheduler(t_max=0.4)
    config = scheduler.config
    assert config["t_max"] == config.t_max == 0.4
    assert "sigma_max" in config and "nope" not in config and 0 not in config
    assert list(config) == config.keys() == [f.name for f in dataclasses.fields(config)]
    assert dict(config) == {"t_max": 0.4, "sigma_min": 0.01, "sigma_max": 50.0}
    with pytest.raises(KeyError, match="no field 'tmax'.*t_max"):
        config["tmax"]
    with pytest.raises(TypeError, match="indexed by field name"):
        config[0]
    with pytest.raises(TypeError, match=r"frozen.*dataclasses.replace\(config, t_max="):
        config["t_max"] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.t_max = 1.0
    backbone = GaussianBackbone.for_scheduler(VPSDEScheduler())
    assert backbone.config["sample_size"] == backbone.config.sample_size
    from ncml.models.ncpn import NCPNConfig

    assert NCPNConfig()["num_bits"] == NCPNConfig().num_bits


def test_a_user_config_gets_item_access_and_keeps_its_own_fields():
    from ncml.schedulers import SDEScheduler

    @dataclasses.dataclass(frozen=True)
    class KeysConfig:
        t_max: float = 1.0
        keys: int = 3  # a field named like the mapping method is left a field

    class KeysScheduler(SDEScheduler):
        config_class = KeysConfig

    config = KeysScheduler().config
    assert config["keys"] == config.keys == 3 and config["t_max"] == 1.0 and list(config) == ["t_max", "keys"]


def test_from_config_takes_field_overrides():
    config = VESDEScheduler().config
    scheduler = VESDEScheduler.from_config(config, t_max=1.0)
    assert scheduler.config == dataclasses.replace(config, t_max=1.0) and config.t_max == 0.5
    assert VESDEScheduler.from_config({"sigma_max": 10.0}, t_max=1).config.t_max == 1.0
    assert VESDEScheduler.from_config(dict(config), sigma_max=20.0).config.sigma_max == 20.0
    with pytest.raises(TypeError, match=r"unknown config field\(s\) \['tmax'\].*t_max"):
        VESDEScheduler.from_config(config, tmax=1.0)
    with pytest.raises(TypeError, match="t_max: expected float"):
        VESDEScheduler.from_config(config, t_max="1")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDEScheduler.from_config(config, sigma_min=100.0)
    with pytest.raises(TypeError, match="config must be"):
        VESDEScheduler.from_config(VPSDEScheduler().config, t_max=1.0)


# ---- 5. diffusers habits: pipelines ---------------------------------------------------------------------
@pytest.fixture
def pipe():
    scheduler = VPSDEScheduler()
    pipe = NCMLPipeline(GaussianBackbone.for_scheduler(scheduler), scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_from_pretrained_takes_torch_dtype_and_device(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = NCMLPipeline.from_pretrained(tmp_path, torch_dtype=torch.float64)
    assert loaded.dtype == torch.float64 and loaded.backbone.loc.dtype == torch.float64
    loaded = NCMLPipeline.from_pretrained(tmp_path, torch_dtype=torch.float16, device="cpu")
    assert loaded.dtype == torch.float16 and loaded.device == torch.device("cpu")
    replacement = GaussianBackbone.for_scheduler(pipe.scheduler)
    loaded = NCMLPipeline.from_pretrained(tmp_path, backbone=replacement, torch_dtype=torch.float64)
    assert loaded.backbone is replacement and replacement.dtype == torch.float64
    with pytest.raises(TypeError, match="torch_dtype must be a floating-point torch.dtype.*'float16'"):
        NCMLPipeline.from_pretrained(tmp_path, torch_dtype="float16")
    with pytest.raises(TypeError, match="torch_dtype must be a floating-point.*torch.int8"):
        NCMLPipeline.from_pretrained(tmp_path, torch_dtype=torch.int8)
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['torch_type'\].*torch_dtype"):
        NCMLPipeline.from_pretrained(tmp_path, torch_type=torch.float16)
    with pytest.raises(ValueError, match="device='gpu0' is not a device"):
        NCMLPipeline.from_pretrained(tmp_path, device="gpu0")


def test_to_takes_a_dtype_first(pipe):
    assert pipe.to(torch.float64) is pipe and pipe.dtype == torch.float64
    pipe.to("cpu", torch.float32)
    assert pipe.dtype == torch.float32 and pipe.device == torch.device("cpu")
    pipe.to(dtype=torch.float64)
    assert pipe.dtype == torch.float64
    pipe.to(torch.device("cpu"))
    assert pipe.dtype == torch.float64
    with pytest.raises(TypeError, match="two dtypes"):
        pipe.to(torch.float16, torch.float32)
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype.*torch.int64"):
        pipe.to(torch.int64)
    with pytest.raises(TypeError, match="device must be a str"):
        pipe.to(1.5)


def test_output_indexes_like_diffusers(pipe):
    out = pipe(2, t_start=0.1, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert isinstance(out, NCMLPipelineOutput)
    assert out[0] is out.images and out["images"] is out.images and out[1] == out["nfe"] == out.nfe
    assert out[-1] is out.noisy_samples and out[:2] == (out.images, out.nfe)
    images, nfe, noisy = out
    assert images is out.images and len(out) == 3
    assert list(dict(out)) == ["images", "nfe", "noisy_samples"] == out.keys()
    assert isinstance(out[0], np.ndarray) and out[0].shape == (2, 4, 4, 1)
    with pytest.raises(KeyError, match="no field 'image'.*images"):
        out["image"]
    with pytest.raises(IndexError):
        out[3]
    with pytest.raises(TypeError, match="field name, an int or a slice"):
        out[1.0]


def test_pipeline_config_is_the_model_index(pipe, tmp_path):
    config = pipe.config
    assert config["_class_name"] == "NCMLPipeline"
    assert config["scheduler"] == ("ncml", "VPSDEScheduler")
    assert config["backbone"] == ("gaussian_backbone", "GaussianBackbone")
    with pytest.raises(TypeError):
        config["scheduler"] = ("ncml", "VESDEScheduler")
    pipe.save_pretrained(tmp_path)
    saved = hub_utils.read_json(tmp_path / "model_index.json")
    assert isinstance(saved.pop("_save_id"), str)  # the id of that save, not part of the config
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()} == dict(config)


def test_a_torch_compile_wrapper_gets_instructions(pipe):
    backbone, scheduler = pipe.backbone, pipe.scheduler
    compiled = torch.compile(backbone, backend="eager")  # compiles lazily: nothing runs here
    with pytest.raises(TypeError, match=r"torch.compile wrapper.*GaussianBackbone.*backbone.compile\(") as info:
        NCMLPipeline(compiled, scheduler)
    assert "_orig_mod" in str(info.value)
    with pytest.raises(TypeError, match="torch.compile wrapper"):
        pipe.backbone = compiled  # the diffusers idiom `pipe.unet = torch.compile(pipe.unet)`
    assert pipe.backbone is backbone
    with pytest.raises(TypeError, match="scheduler must be a SDEScheduler, got str"):
        pipe.scheduler = "VESDEScheduler"


def test_a_backbone_compiled_in_place_saves_plain_weights(pipe, tmp_path):
    pipe.backbone.compile(backend="eager")  # what the error above recommends; compiles on the first call
    pipe2 = NCMLPipeline(pipe.backbone, pipe.scheduler)
    pipe2.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    assert list(load_file(tmp_path / "backbone" / "model.safetensors")) == ["loc"]
    assert pipe2.config["backbone"] == ("gaussian_backbone", "GaussianBackbone")
    assert NCMLPipeline.from_pretrained(tmp_path).backbone.config == pipe.backbone.config


# ---- 6. the licence -------------------------------------------------------------------------------------
def test_license_file_matches_pyproject():
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 190
