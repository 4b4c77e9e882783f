"""Where files live: local folders, the Hugging Face Hub cache, atomic writes, uploads and model cards.

Every load in ncml goes through :func:`resolve_folder` and every upload through :func:`upload_folder`,
so models, schedulers and pipelines share one notion of "a folder or a Hub repo id".
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import sys
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

    A repo that cannot be had raises ``FileNotFoundError`` saying why: not in the local Hub cache under offline mode
    or ``local_files_only=True``, no such repository or revision on the Hub (or a private / gated one without a
    token), or an HTTP error from the Hub; :class:`HubSnapshotNotCachedError` (also a ``FileNotFoundError``) if the
    Hub could not be reached at all.
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


class HubConnectionError(ConnectionError):
    """The Hugging Face Hub could not be reached: no network, a DNS failure, a timeout, a proxy error, or Hub offline
    mode (``HF_HUB_OFFLINE=1``). Raised by uploads (``push_to_hub``) and, as :class:`HubSnapshotNotCachedError`, by
    loads of a repo that is not in the local Hub cache. The original error is its ``__cause__``."""


class HubSnapshotNotCachedError(HubConnectionError, FileNotFoundError):
    """A Hub repo could not be downloaded because the Hub could not be reached, and it is not in the local Hub cache.

    Both a :class:`HubConnectionError` and a ``FileNotFoundError`` (like every other "these files are not available"
    error of ``from_pretrained``).
    """


def network_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes that mean "the network or the Hub's host could not be reached".

    Python's own (``ConnectionError``, which includes ``huggingface_hub``'s ``OfflineModeIsEnabled``,
    ``TimeoutError``, ``socket.gaierror``) and the transport errors of the HTTP clients ``huggingface_hub`` uses
    (``httpx``-style ``TransportError``: connect, timeout, proxy and protocol errors; ``requests``' connection and
    timeout errors), for the clients that are installed. HTTP status errors (404, 401, 5xx) are not among them.
    """
    import socket

    types_: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        if isinstance(getattr(module, "TransportError", None), type):
            types_.append(module.TransportError)
    try:
        import requests
    except ImportError:
        pass
    else:
        types_ += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    return tuple(types_)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip().rstrip(":")


def _hub_offline() -> bool:
    """Whether ``huggingface_hub`` is in offline mode (``HF_HUB_OFFLINE=1``, read when it was imported)."""
    from huggingface_hub import constants

    is_offline = getattr(constants, "is_offline_mode", None)
    return bool(is_offline() if callable(is_offline) else getattr(constants, "HF_HUB_OFFLINE", False))


def _causes(error: BaseException):
    """``error`` and the exceptions it was raised from (``__cause__``, else ``__context__``), innermost last."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _snapshot(repo_id, revision, cache_dir, token, local_files_only) -> str:
    """``snapshot_download``, its errors turned into one that says why the repo is not available: not in the local
    Hub cache under offline mode or ``local_files_only``, the Hub could not be reached
    (:class:`HubSnapshotNotCachedError`), no such repo or revision (or a private / gated one), or an HTTP error."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (HFValidationError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    from . import __version__

    what = f"path_or_repo_id={repo_id!r}" + ("" if revision is None else f" (revision={revision!r})")
    cache = f"the local Hub cache ({cache_dir or constants.HF_HUB_CACHE})"
    network_errors = network_error_types()
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
    except RevisionNotFoundError as e:
        raise FileNotFoundError(f"{what}: the repo exists on the Hub but has no revision {revision!r} "
                                "(a branch, tag or commit hash)") from e
    except RepositoryNotFoundError as e:  # includes gated repos
        raise FileNotFoundError(
            f"{what}: not a local folder, and the repository was not found on the Hub: no such repo id, or it is "
            "private or gated and needs an access token (token=..., or log in with `hf auth login`)") from e
    except LocalEntryNotFoundError as e:
        causes = list(_causes(e))[1:]
        offline = _hub_offline() or any(isinstance(c, OfflineModeIsEnabled) for c in causes)
        if local_files_only or offline:
            why = " and ".join(reason for reason, on in (("local_files_only=True", local_files_only),
                                                         ("Hub offline mode is on (HF_HUB_OFFLINE=1)", offline)) if on)
            fix = " and ".join(fix for fix, on in (("pass local_files_only=False", local_files_only),
                                                   ("unset HF_HUB_OFFLINE", offline)) if on)
            raise FileNotFoundError(f"{what}: not a local folder, and not in {cache}; nothing is downloaded because "
                                    f"{why} ({fix} to download it, or check the repo id)") from e
        network = next((c for c in causes if isinstance(c, network_errors)), None)
        if network is not None:
            raise HubSnapshotNotCachedError(
                f"{what}: not a local folder, and not in {cache}; it could not be downloaded because the Hugging Face "
                f"Hub could not be reached ({_describe(network)}). Check the network connection and proxy settings "
                "and retry") from e
        http = next((c for c in causes if isinstance(c, HfHubHTTPError)), None)
        if http is not None:
            status = getattr(getattr(http, "response", None), "status_code", None)
            raise FileNotFoundError(
                f"{what}: not a local folder, and not in {cache}; the Hub answered with an error (HTTP {status}: "
                f"{_describe(http)})") from e
        raise FileNotFoundError(f"{what}: not a local folder, and not available from the Hub or in {cache} "
                                f"({_describe(e)})") from e
    except HfHubHTTPError as e:  # e.g. 401 for a private repo without a token
        status = getattr(getattr(e, "response", None), "status_code", None)
        hint = ("; a private or gated repo needs an access token (token=..., or `hf auth login`)"
                if status in (401, 403) else "")
        raise FileNotFoundError(f"{what}: the download from the Hub failed with HTTP {status} ({_describe(e)})"
                                f"{hint}") from e
    except network_errors as e:  # lost during the download, or a proxy error
        if isinstance(e, OfflineModeIsEnabled):
            raise HubSnapshotNotCachedError(f"{what}: Hub offline mode is on (HF_HUB_OFFLINE=1), and the repo is not "
                                            f"completely in {cache}; unset HF_HUB_OFFLINE to download it") from e
        raise HubSnapshotNotCachedError(
            f"{what}: the download from the Hugging Face Hub failed because the Hub could not be reached "
            f"({_describe(e)}). Check the network connection and proxy settings and retry") from e


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
    """Create ``repo_id`` if needed and upload every file of ``folder`` (``HfApi.upload_folder``).

    Raises :class:`HubConnectionError`, naming ``repo_id``, if the Hub cannot be reached (no network, a timeout, a
    proxy error, or offline mode); HTTP errors the Hub answers with (e.g. 401 without a token) propagate as they are.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(f"repo_id must be a non-empty string like 'org/name', got {repo_id!r}")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                                 commit_message=commit_message or "Upload with ncml")
    except OfflineModeIsEnabled as e:
        raise HubConnectionError(f"cannot upload to the Hub repo repo_id={repo_id!r}: Hub offline mode is on "
                                 "(HF_HUB_OFFLINE=1); unset HF_HUB_OFFLINE to upload") from e
    except network_error_types() as e:
        raise HubConnectionError(
            f"cannot upload to the Hub repo repo_id={repo_id!r}: the Hugging Face Hub could not be reached "
            f"({_describe(e)}). Check the network connection and proxy settings and retry") from e


# ---- folders swapped in whole (pipeline components) -------------------------------------------------
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100  # linux/fcntl.h
_renameat2_fn: Any = None


def _renameat2():
    """libc's ``renameat2`` (Linux, glibc ≥ 2.28) through ctypes, or ``None`` where there is none."""
    global _renameat2_fn
    if _renameat2_fn is None:
        fn = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", False)
                if fn:
                    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                    fn.restype = ctypes.c_int
            except (OSError, AttributeError):
                fn = False
        _renameat2_fn = fn
    return _renameat2_fn or None


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap ``a`` and ``b`` (both must exist) in one atomic step: Linux ``renameat2(RENAME_EXCHANGE)``.

    Returns ``False`` where that is not possible (another OS, an old C library, a file system without it, or a
    path that does not exist); the paths are then as they were. Other errors raise ``OSError``.
    """
    import ctypes

    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOENT, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


def swap_folder_into_place(new: str | os.PathLike, final: str | os.PathLike, *,
                           aside: str | os.PathLike) -> Path | None:
    """Put the complete folder ``new`` at ``final``, replacing what is there; return the path that now holds the
    replaced folder (for the caller to remove), or ``None`` if there was none.

    Where the OS offers it (:func:`exchange_paths`), the two are exchanged atomically: ``final`` is at every moment
    either the old or the new folder, and the old one ends up at ``new``. Elsewhere the old folder is first renamed to
    ``aside``, then ``new`` is renamed to ``final``: for a moment there is no ``final``, which readers must tolerate
    (a retry), and a crash in between leaves ``final`` missing and the old folder at ``aside``. ``final`` must be a
    folder (or missing); a symbolic link there is replaced, never followed.
    """
    new, final, aside = Path(new), Path(final), Path(aside)
    old = None
    for _ in range(100):  # repeated only while another process keeps putting folders at `final`
        if final.is_symlink() or final.exists():
            if not (final.is_dir() or final.is_symlink()):
                raise FileExistsError(f"{final} exists and is not a folder; it cannot be replaced by one")
            if old is None and exchange_paths(new, final):
                return new
            if old is not None:  # a folder we moved aside before was replaced by another writer's anyway
                remove_path(old)
            try:
                os.rename(final, aside)
                old = aside
            except FileNotFoundError:
                old = None  # moved away meanwhile
        try:
            os.rename(new, final)
            return old
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    raise OSError(f"could not put {new} in place of {final}: another process kept replacing it (100 tries)")


def remove_path(path: str | os.PathLike) -> None:
    """Remove a folder tree, a file or a symbolic link (the link, never what it points to); missing is fine;
    errors are ignored (what remains is hidden debris, never a pipeline's file)."""
    path = Path(path)
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (new names, renames) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, shared: bool = False, timeout: float | None = None):
    """Hold an advisory lock (``flock``) on ``folder`` itself: exclusive for a writer, ``shared`` for readers.

    Writers of one folder take turns, and a reader holding the shared lock sees no writer that takes the lock. No
    lock file is created. ``timeout`` (seconds) bounds the wait; ``None`` waits as long as it takes. Yields ``True``
    if the lock is held, ``False`` where it could not be had in time, or the platform or file system offers none
    (then nothing is serialised).
    """
    try:
        import fcntl
    except ImportError:
        yield False
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        yield _flock(fcntl, fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, timeout)
    finally:
        os.close(fd)  # releases the lock


def _flock(fcntl, fd: int, operation: int, timeout: float | None) -> bool:
    import time

    try:
        if timeout is None:
            fcntl.flock(fd, operation)
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
    except OSError:  # e.g. a file system without locks
        return False
