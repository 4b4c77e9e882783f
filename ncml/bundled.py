"""Pipelines shipped inside the package, by name: ``ncml.pretrained("ncpn-mnist5k-vp")`` → a folder path.

The folder is an ordinary pipeline folder, so ``NCMLPipeline.from_pretrained(ncml.pretrained(name))``
and ``ncml sample --pipeline PATH`` load it like any other.
"""

from __future__ import annotations

from pathlib import Path

# not an importable name (a hyphen), so no import can shadow the function ncml.pretrained with a package of that name
PRETRAINED_DIR = Path(__file__).parent / "bundled-pipelines"


def available() -> list[str]:
    """Names of the bundled pipelines (folders with a ``model_index.json``)."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "model_index.json").is_file())


def pretrained(name: str) -> Path:
    """Path of the bundled pipeline ``name``; raises ``ValueError`` listing the names that exist."""
    names = available()
    if name not in names:
        raise ValueError(f"name={name!r} is not a bundled pipeline; available: {names or 'none bundled yet'}")
    return PRETRAINED_DIR / name
