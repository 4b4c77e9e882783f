"""Build a local Hugging Face Hub cache in a test, so repo ids resolve with ``HF_HUB_OFFLINE=1``."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path


def populate_hub_cache(folder: str | Path, repo_id: str, cache_dir: str | Path) -> Path:
    """Copy ``folder`` into ``cache_dir`` in the Hub cache layout as ``repo_id@main``; return the snapshot.

    Layout (as ``huggingface_hub`` writes it): ``models--org--name/refs/main`` holds a commit hash and
    ``models--org--name/snapshots/<hash>/`` holds the files.
    """
    folder = Path(folder)
    digest = hashlib.sha1()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(folder)).encode())
        digest.update(f.read_bytes())
    commit = digest.hexdigest()
    repo_dir = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    shutil.copytree(folder, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot
