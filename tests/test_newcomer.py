"""What a new user (often coming from 🤗 diffusers) runs into first: the install, file permissions, Hub errors
without a network, diffusers habits, the licence. All offline: the Hub is mocked, the Makefile only dry-run."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

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
