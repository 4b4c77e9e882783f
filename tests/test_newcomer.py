"""What a new user (often coming from 🤗 diffusers) runs into first: the install, file permissions, Hub errors
without a network, diffusers habits, the licence. All offline: the Hub is mocked, the Makefile only dry-run."""

from __future__ import annotations

import os
import platform
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "pipelines"))
from gaussian_backbone import GaussianBackbone  # noqa: E402

from ncml import NCMLPipeline, VPSDEScheduler  # noqa: E402
from ncml import hub_utils  # noqa: E402

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
