"""Where files live: local folders, the Hugging Face Hub cache, atomic writes, uploads and model cards.

Every load in ncml goes through :func:`resolve_folder` and every upload through :func:`upload_folder`,
so models, schedulers and pipelines share one notion of "a folder or a Hub repo id".
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def resolve_folder(
    path_or_repo_id: str | os.PathLike,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """Return a local folder for ``path_or_repo_id``: the folder itself, or a Hub snapshot.

    A repo id is resolved with ``huggingface_hub.snapshot_download``; with ``HF_HUB_OFFLINE=1`` or
    ``local_files_only=True`` it is taken from the local Hub cache and nothing is downloaded.
    ``subfolder`` is a relative path inside that folder; one that leads outside it (``".."``, an absolute path
    elsewhere) raises ``ValueError``.
    """
    if not isinstance(path_or_repo_id, (str, os.PathLike)):
        raise TypeError(f"path_or_repo_id must be a str or path, got {type(path_or_repo_id).__name__}")
    local = Path(path_or_repo_id).expanduser()
    if local.is_dir():
        folder = local
    elif local.exists():
        raise ValueError(f"path_or_repo_id={str(path_or_repo_id)!r} is a file; expected a folder or a Hub repo id")
    elif _looks_like_path(str(path_or_repo_id)):
        raise FileNotFoundError(f"path_or_repo_id={str(path_or_repo_id)!r}: no such folder")
    else:
        folder = Path(_snapshot(str(path_or_repo_id), revision, cache_dir, token, local_files_only))
    if subfolder is not None:
        folder = _subfolder(folder, subfolder, path_or_repo_id)
    return folder


def _subfolder(folder: Path, subfolder, path_or_repo_id) -> Path:
    """``folder / subfolder``, refused (``ValueError``) unless it stays inside ``folder`` after normalising ``..``.

    The check is on the path as written (symbolic links inside the folder are followed as usual).
    """
    if not isinstance(subfolder, (str, os.PathLike)):
        raise TypeError(f"subfolder must be a str (a path inside {str(path_or_repo_id)!r}), "
                        f"got {type(subfolder).__name__}")
    if not str(subfolder):
        return folder
    root = os.path.normpath(os.path.abspath(folder))
    target = os.path.normpath(os.path.join(root, subfolder))  # an absolute subfolder replaces root here
    if not Path(target).is_relative_to(root):
        raise ValueError(f"subfolder={str(subfolder)!r} leads outside the folder {str(path_or_repo_id)!r} ({root}); "
                         "it must be a path inside it")
    result = folder / os.path.relpath(target, root)
    if not result.is_dir():
        raise FileNotFoundError(f"subfolder={str(subfolder)!r} does not exist in {str(path_or_repo_id)!r}")
    return result


def _looks_like_path(s: str) -> bool:
    # A Hub repo id is "name" or "org/name"; anything else that does not exist is a missing folder.
    return s.startswith((".", "/", "~")) or s.count("/") > 1 or "\\" in s


def _snapshot(repo_id, revision, cache_dir, token, local_files_only) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    from . import __version__

    try:
        return snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            library_name="ncml",
            library_version=__version__,
        )
    except HFValidationError as e:
        raise ValueError(f"path_or_repo_id={repo_id!r} is neither an existing folder nor a valid Hub repo id") from e
    except (LocalEntryNotFoundError, RepositoryNotFoundError) as e:
        raise FileNotFoundError(
            f"path_or_repo_id={repo_id!r}: not a local folder, and not found on the Hub or in the local Hub cache "
            f"(offline={os.environ.get('HF_HUB_OFFLINE', '0')}, revision={revision!r})"
        ) from e


def refuse_pickles(folder: Path, expected: str) -> None:
    """Raise if the file ``expected`` is missing from ``folder``, naming its full path; if the folder holds pickled
    checkpoints (files that exist there) instead, say so and refuse them.

    ncml never unpickles: a ``.bin``/``.pt`` file can run arbitrary code when loaded.
    """
    path = Path(folder) / expected
    if path.is_file():
        return
    if path.exists():
        raise ValueError(f"{path} is not a regular file (expected the weights file {expected!r})")
    pickles = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in PICKLE_SUFFIXES) \
        if folder.is_dir() else []
    if pickles:
        raise ValueError(
            f"{path} is missing; the folder holds pickled checkpoint(s) {pickles} instead, but ncml loads "
            "safetensors only and refuses to unpickle. Convert the weights with safetensors.torch.save_file."
        )
    raise FileNotFoundError(f"{path} is missing: the folder has no {expected!r} (deleted or never saved?)")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Write ``path`` via a temporary file in the same folder and ``os.replace``.

    A reader (or a crash) sees either the old file or the complete new one, never a partial write.
    ``write_fn(fileobj)`` writes the content. The file gets the permissions a plain ``open(path, "w")`` gives a new
    file, ``0o666`` less the process umask (``0o644`` under the usual umask ``022``), not ``mkstemp``'s ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _create_temp_file(path: Path) -> tuple[int, str]:
    """Create a new file ``.<name>.<random>.tmp`` beside ``path``; return its descriptor (open for writing) and path.

    Created like ``open()`` creates a file (mode ``0o666``, which the kernel reduces by the umask), but exclusively:
    an existing name is never reused or followed.
    """
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_CLOEXEC", 0))
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}: 100 random names were all taken")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` to ``path`` as indented JSON with a final newline, atomically (:func:`atomic_write`)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, argname: str = "path") -> dict:
    """The JSON object in ``path``. Raises ``ValueError`` naming ``argname`` and the file if it is not UTF-8, not
    valid JSON (``NaN``/``Infinity`` included: they are not JSON), repeats a key, or does not hold an object."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{argname}: {path} is not UTF-8 text ({e})") from e
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except ValueError as e:  # JSONDecodeError, an int too long to convert, and the two hooks' errors
        raise ValueError(f"{argname}: {path} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{argname}: {path} must hold a JSON object, got {type(data).__name__}")
    return data


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen, repeated = set(), set()
        for k, _ in pairs:
            (repeated if k in seen else seen).add(k)
        raise ValueError(f"key(s) {sorted(repeated)} appear more than once in one object")
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def model_card_text(*, title: str, summary: str, tags: list[str] | None = None, datasets: list[str] | None = None,
                    metrics: dict[str, Any] | None = None, body: str = "") -> str:
    """A Hub model card (YAML front matter via ``huggingface_hub.ModelCardData``) as text."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(library_name="ncml", tags=["ncml", "autoregressive", "noise-conditional"] + (tags or []),
                         datasets=datasets)
    lines = [f"# {title}", "", summary, ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    if body:
        lines += [body, ""]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
    return str(card)


def upload_folder(folder: str | os.PathLike, repo_id: str, *, private: bool | None = None, token: str | None = None,
                  commit_message: str | None = None):
    """Create ``repo_id`` if needed and upload every file of ``folder`` (``HfApi.upload_folder``)."""
    from huggingface_hub import HfApi

    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(f"repo_id must be a non-empty string like 'org/name', got {repo_id!r}")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                             commit_message=commit_message or "Upload with ncml")
