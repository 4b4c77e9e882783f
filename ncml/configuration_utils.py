"""One config mechanism for models, schedulers and pipelines.

A component's configuration is a ``@dataclass(frozen=True)`` of JSON types (``config_class``). It is
written as JSON with ``_class_name`` and ``_ncml_version`` and read back strictly: unknown keys, a
config of another class or a value of the wrong type raise, nothing is dropped or reset silently.
A config *file* (``from_pretrained``) must also list every field: a missing one raises rather than taking
the dataclass default, which may differ from the value the component was trained with. A dict passed to
``from_config`` in code may leave fields out; they take their defaults.

Every ``config_class`` of a ``ConfigMixin`` subclass also reads like a read-only dict of its fields, as diffusers'
configs do: ``scheduler.config["t_max"]``, ``"t_max" in config``, ``list(config)`` (field names),
``dict(config)``; attribute access (``config.t_max``) is unchanged (see :func:`add_item_access`).

Classes are resolved by ``(top-level package, class name)`` only, from a registry of ``ConfigMixin``
subclasses that are already imported (ncml's own, plus user subclasses such as a custom ``SDEScheduler``):
nothing is imported because a JSON file says so, and a user class named like one of ncml's does not
replace it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from . import hub_utils

T = TypeVar("T", bound="ConfigMixin")

# (top-level package of the defining module, class name) -> class; see register_class
_REGISTRY: dict[tuple[str, str], type] = {}


def register_class(cls: type) -> None:
    """Make ``cls`` resolvable as ``[package, cls.__name__]``, ``package`` the top-level package of its module.

    Keyed by package and name, so a user class named like an ncml class (``class VPSDEScheduler(SDEScheduler)``
    in a user module) is registered beside ncml's, never in its place.
    """
    _REGISTRY[(cls.__module__.split(".")[0], cls.__name__)] = cls


def resolve_class(library: str, class_name: str, base: type, *, argname: str) -> type:
    """Look up ``[library, class_name]`` (as written in ``model_index.json``) without importing anything.

    ``library`` is the top-level package of the class: ``"ncml"`` for ncml's own classes (its public ones are taken
    from a fixed table), or the package of a user subclass (e.g. a custom ``SDEScheduler``) that is already imported.
    """
    cls = None
    if library == "ncml":
        import ncml

        if class_name in ncml._LAZY:  # a fixed table of ncml's own public classes
            cls = getattr(ncml, class_name)
    if cls is None:
        cls = _REGISTRY.get((library, class_name))
    if not isinstance(cls, type):
        raise ValueError(f"{argname}: class [{library!r}, {class_name!r}] is not an ncml class, nor an imported "
                         f"subclass of an ncml base class: {_where_looked(library, class_name)}")
    if not issubclass(cls, base):
        raise ValueError(f"{argname}: {class_name} is not a {base.__name__}")
    return cls


def _where_looked(library: str, class_name: str) -> str:
    """Where :func:`resolve_class` looked for ``[library, class_name]``, and what to do about it."""
    if library == "ncml":
        return (f"ncml's public classes (ncml.__all__) have no {class_name!r}. A class of another package is "
                f"recorded under that package's name, not 'ncml'; check the name")
    if library == "__main__":
        return (f"no class {class_name!r} defined in __main__ (the script or notebook that saved the folder) has "
                f"been created in this process. Define or import that class in your __main__ before loading, or "
                f"move it into an importable package, import it from there and save the folder again")
    return (f"looked among the already-imported subclasses defined in the package {library!r} and found none named "
            f"{class_name!r}. Nothing is imported because a file names it: import the package defining the class "
            f"first (`import {library}`, or the module of {library!r} that defines {class_name}), then load again")


def add_item_access(config_class: type) -> None:
    """Give the frozen dataclass ``config_class`` read-only dict-style access to its fields.

    ``config["name"]`` is ``config.name`` (an unknown name raises ``KeyError`` listing the fields), ``"name" in
    config`` tests for a field, iterating yields the field names and ``config.keys()`` returns them, so
    ``dict(config)`` is ``{name: value}``. Item assignment raises ``TypeError`` (configs are frozen). Methods the class
    already defines, and ``keys`` where it is a field name, are left alone. ``ConfigMixin`` calls this for the
    ``config_class`` of every subclass; a non-dataclass is ignored.
    """
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        return
    field_names = {f.name for f in dataclasses.fields(config_class)}
    for name, method in _ITEM_ACCESS.items():
        if name in field_names or name in vars(config_class):
            continue
        if getattr(config_class, name, None) not in (None, method, getattr(object, name, None)):
            continue  # inherited from a base other than object that defines it itself
        setattr(config_class, name, method)


def _config_getitem(self, name: str) -> Any:
    """The value of the field ``name`` (``config["t_max"]`` is ``config.t_max``)."""
    names = [f.name for f in dataclasses.fields(self)]
    if not isinstance(name, str):
        raise TypeError(f"{type(self).__name__} is indexed by field name (a str), got {type(name).__name__}; "
                        f"fields: {names}")
    if name not in names:
        raise KeyError(f"{type(self).__name__} has no field {name!r}; fields: {names}")
    return getattr(self, name)


def _config_setitem(self, name, value) -> None:
    raise TypeError(f"{type(self).__name__} is frozen: config[{name!r}] cannot be assigned; make a changed copy "
                    f"with dataclasses.replace(config, {name}=...) or <Component>.from_config(config, {name}=...)")


def _config_contains(self, name) -> bool:
    return isinstance(name, str) and name in {f.name for f in dataclasses.fields(self)}


def _config_iter(self):
    return iter([f.name for f in dataclasses.fields(self)])


def _config_keys(self) -> list[str]:
    """The field names, in declaration order."""
    return [f.name for f in dataclasses.fields(self)]


_ITEM_ACCESS = {"__getitem__": _config_getitem, "__setitem__": _config_setitem, "__contains__": _config_contains,
                "__iter__": _config_iter, "keys": _config_keys}


def config_to_dict(config: Any) -> dict[str, Any]:
    return {f.name: _to_json(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _to_json(v):
    return list(v) if isinstance(v, tuple) else v


def config_from_dict(config_class: type, data: dict[str, Any], *, argname: str = "config",
                     require_all: bool = False) -> Any:
    """Build ``config_class`` from a JSON dict; keys starting with ``_`` are metadata and skipped.

    Unknown keys raise ``ValueError``. With ``require_all=True`` (for dicts read from a saved file) a missing field
    raises ``ValueError`` naming it; otherwise missing fields take the dataclass defaults.
    """
    if not isinstance(data, dict):
        raise TypeError(f"{argname} must be a dict or {config_class.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    values = {k: v for k, v in data.items() if not k.startswith("_")}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{argname}: unknown key(s) {unknown} for {config_class.__name__}; known: {sorted(fields)}")
    missing = [name for name in fields if name not in values]
    if require_all and missing:
        raise ValueError(f"{argname}: missing field(s) {missing} of {config_class.__name__}; a saved config must "
                         "list every field (defaults apply only to dicts passed to from_config)")
    hints = typing.get_type_hints(config_class)
    kwargs = {k: _check_type(f"{argname}.{k}", v, hints[k]) for k, v in values.items()}
    return config_class(**kwargs)


def _check_type(name: str, value: Any, tp: Any) -> Any:
    """Accept ``value`` for annotation ``tp`` (JSON types only); lists become tuples, ints become floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            try:
                return _check_type(name, value, arm)
            except TypeError as e:
                errors.append(str(e))
        raise TypeError(f"{name}: {value!r} matches none of {tp}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is Any:
        return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            args = typing.get_args(tp)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_check_type(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
            if len(args) == len(value):
                return tuple(_check_type(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    elif origin is dict:
        if isinstance(value, dict):
            return value
    else:
        raise TypeError(f"{name}: unsupported config annotation {tp}")
    raise TypeError(f"{name}: expected {getattr(tp, '__name__', tp)}, got {value!r} ({type(value).__name__})")


class ConfigMixin:
    """``from_config`` / ``save_config`` / ``from_pretrained`` / ``save_pretrained`` / ``push_to_hub``.

    Subclasses set ``config_class`` (a frozen dataclass) and keep the instance in ``self.config``.
    """

    config_class: ClassVar[type]
    config_name: ClassVar[str] = "config.json"
    config: Any

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_class(cls)
        if "config_class" in vars(cls):
            add_item_access(cls.config_class)  # config["field"], as in diffusers

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls: type[T], config: dict | Any, /, **overrides: Any) -> T:
        """Build from a config dataclass or a JSON dict (unknown keys raise ``ValueError``).

        Fields missing from a dict take their defaults; ``from_pretrained`` instead requires every field.
        ``overrides`` replace fields by name, e.g. ``VESDEScheduler.from_config(scheduler.config, t_max=1.0)``; they
        are checked like the config's own values, and a name that is not a field raises ``TypeError`` naming it.
        """
        if overrides:
            fields = [f.name for f in dataclasses.fields(cls.config_class)]
            unknown = sorted(set(overrides) - set(fields))
            if unknown:
                raise TypeError(f"{cls.__name__}.from_config got unknown config field(s) {unknown}; the fields of "
                                f"{cls.config_class.__name__} are {fields}")
            if isinstance(config, dict):
                config = {**config, **{k: _to_json(v) for k, v in overrides.items()}}
            else:  # a checked copy of the dataclass (its __post_init__ runs again)
                config = cls._config_object(config, argname="config", require_all=False)
                hints = typing.get_type_hints(type(config))
                config = dataclasses.replace(config, **{k: _check_type(k, v, hints[k]) for k, v in overrides.items()})
        return cls._from_config_object(cls._config_object(config, argname="config", require_all=False))

    @classmethod
    def _config_object(cls, config: dict | Any, *, argname: str, require_all: bool) -> Any:
        if isinstance(config, dict):
            name = config.get("_class_name")
            if name is not None and name != cls.__name__:
                raise ValueError(f"{argname}: this config is for class {name!r}, not {cls.__name__!r}")
            return config_from_dict(cls.config_class, config, argname=argname, require_all=require_all)
        if not isinstance(config, cls.config_class):
            raise TypeError(f"{argname} must be a dict or {cls.config_class.__name__}, got {type(config).__name__}")
        return config

    @classmethod
    def _from_config_object(cls: type[T], config: Any) -> T:
        return cls(config)

    # -- files ------------------------------------------------------------------------------
    def save_config(self, save_directory: str | os.PathLike) -> Path:
        from . import __version__

        path = Path(save_directory) / self.config_name
        hub_utils.write_json(path, {"_class_name": type(self).__name__, "_ncml_version": __version__,
                                    **config_to_dict(self.config)})
        return path

    @classmethod
    def load_config(cls, folder: str | os.PathLike) -> dict[str, Any]:
        path = Path(folder) / cls.config_name
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {cls.config_name!r}; is it a {cls.__name__} folder?")
        return hub_utils.read_json(path, argname="config")

    @classmethod
    def from_pretrained(cls: type[T], pretrained_model_name_or_path: str | os.PathLike, *,
                        subfolder: str | None = None, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                        local_files_only: bool = False) -> T:
        """Load from a local folder or a Hub repo id (resolved from the local cache when offline).

        The config file must name every field of ``config_class`` (a missing one raises ``ValueError``).
        """
        folder = hub_utils.resolve_folder(pretrained_model_name_or_path, subfolder=subfolder, revision=revision,
                                          cache_dir=cache_dir, token=token, local_files_only=local_files_only)
        config = cls._config_object(cls.load_config(folder), argname=str(Path(folder) / cls.config_name),
                                    require_all=True)
        obj = cls._from_config_object(config)
        obj._load_state(folder)
        return obj

    def save_pretrained(self, save_directory: str | os.PathLike, *, push_to_hub: bool = False,
                        repo_id: str | None = None) -> None:
        """Write a Hub-ready folder (config + weights where there are any); optionally upload it."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        self.save_config(save_directory)
        self._save_state(save_directory)
        if push_to_hub:
            if repo_id is None:
                raise ValueError("repo_id is required when push_to_hub=True")
            self.push_to_hub(repo_id)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str | None = None):
        """Save to a temporary folder, add a model card, and upload it with ``HfApi.upload_folder``."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            if not (Path(tmp) / "README.md").exists():
                hub_utils.atomic_write_text(Path(tmp) / "README.md", self._model_card())
            return hub_utils.upload_folder(tmp, repo_id, private=private, token=token,
                                           commit_message=commit_message)

    def _model_card(self) -> str:
        return hub_utils.model_card_text(title=type(self).__name__,
                                         summary=f"An ncml `{type(self).__name__}` saved with `save_pretrained`.")

    # hooks for components with state beyond the config (weights)
    def _save_state(self, folder: Path) -> None:
        pass

    def _load_state(self, folder: Path) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"
