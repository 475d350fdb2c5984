"""User code named in a spec: `path/to/file.py:Name` or `package.module:Name`.

A spec's `model` or `dataset.name` may point at the user's own Python object
instead of a registered name. The file is imported once on the driver under a
private module name and registered with cloudpickle *by value*, so the object
travels to Ray workers inside the trainable: a 2-node search works when the
file exists only on the driver's machine. Its imports of installed packages
are imported again on the workers; a file that imports the user's *other*
local files needs those files installed as a package on every node.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from trainables.errors import UserError

PYTHON_PREFIX = "python:"  # names of objects handed over from Python (run_search(model=...)), not files
_MODULE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_loaded: dict[str, Any] = {}  # resolved reference -> object, per process


def is_reference(name: Any) -> bool:
    """Whether `name` points at user code (`file.py:Name`, `pkg.mod:Name`, `python:...`) rather than a registered name."""
    return isinstance(name, str) and (":" in name)


@dataclass(frozen=True)
class Reference:
    """A parsed reference: a file (absolute path) or a module, and the attribute path in it."""

    file: Path | None
    module: str | None
    attribute: str

    def __str__(self) -> str:
        return f"{self.file if self.file else self.module}:{self.attribute}"


def parse_reference(ref: str, *, base_dir: str | Path | None = None, kind: str = "object") -> Reference:
    """`file.py:Name` (relative to `base_dir`, else the working directory) or `pkg.mod:Name`; a missing file is a `UserError`."""
    target, sep, attribute = ref.rpartition(":")
    if not sep or not target or not re.fullmatch(r"[A-Za-z_][\w.]*", attribute):
        raise UserError(f"{kind} {ref!r} must look like path/to/file.py:Name or package.module:Name")
    if target.endswith(".py") or "/" in target or "\\" in target:
        candidates = [Path(target).expanduser()]
        if not candidates[0].is_absolute():
            candidates = ([Path(base_dir) / target] if base_dir else []) + [Path.cwd() / target]
        for path in candidates:
            if path.is_file():
                return Reference(file=path.resolve(), module=None, attribute=attribute)
        tried = " or ".join(str(p) for p in dict.fromkeys(candidates))
        raise UserError(f"{kind} {ref!r}: file {target} not found (looked at {tried}); give a path that exists, "
                        "relative to the spec's folder or the working directory")
    if not _MODULE_REF.match(ref):
        raise UserError(f"{kind} {ref!r} must look like path/to/file.py:Name or package.module:Name")
    return Reference(file=None, module=target, attribute=attribute)


def canonical_reference(ref: str, *, base_dir: str | Path | None = None, kind: str = "object") -> str:
    """`ref` with its file made absolute (what a saved search stores, so a resume from another folder finds it)."""
    if ref.startswith(PYTHON_PREFIX):
        return ref
    return str(parse_reference(ref, base_dir=base_dir, kind=kind))


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (model.json records which version of the user's file made a model)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import_file(path: Path, kind: str) -> Any:
    module_name = f"hpsearch_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{kind} file {path} cannot be imported as Python; name a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent))  # its own sibling imports work on the driver
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code failed: one line, what and where
        del sys.modules[module_name]
        raise UserError(f"importing {kind} file {path} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        " (fix the file; it is imported as a module)") from None
    finally:
        sys.path.remove(str(path.parent))
    _ship_by_value(module)
    return module


def _ship_by_value(module: Any) -> None:
    """Pickle the module's functions and classes by value: Ray workers need not have the file."""
    picklers = []
    try:
        from ray import cloudpickle as ray_cloudpickle  # Ray serialises with its own vendored copy

        picklers.append(ray_cloudpickle)
    except ImportError:
        pass
    try:
        import cloudpickle

        picklers.append(cloudpickle)
    except ImportError:
        pass
    for pickler in picklers:
        try:
            pickler.register_pickle_by_value(module)
        except ValueError:  # already registered
            pass


def load_reference(ref: str, *, base_dir: str | Path | None = None, kind: str = "object") -> Any:
    """The object `ref` names (imported once per process); a missing file, module or name is a `UserError`."""
    key = f"{base_dir}|{ref}"
    if key in _loaded:
        return _loaded[key]
    parsed = parse_reference(ref, base_dir=base_dir, kind=kind)
    if parsed.file is not None:
        module = _import_file(parsed.file, kind)
        where = str(parsed.file)
    else:
        try:
            module = importlib.import_module(str(parsed.module))
        except ImportError as exc:
            raise UserError(f"{kind} {ref!r}: module {parsed.module!r} cannot be imported ({exc}); install it or name a file.py") from None
        where = f"module {parsed.module}"
    obj: Any = module
    for part in parsed.attribute.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
                           and getattr(v, "__module__", None) == module.__name__)
            raise UserError(f"{kind} {ref!r}: {where} has no {parsed.attribute!r}; it defines: {', '.join(names) or 'no callables'}")
        obj = getattr(obj, part)
    _loaded[key] = obj
    return obj


def object_name(obj: Any) -> str:
    """The display name of an object handed over from Python: `python:module.QualName`."""
    return f"{PYTHON_PREFIX}{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def keyword_parameters(factory: Callable[..., Any]) -> tuple[set[str], bool]:
    """(keyword names `factory` takes, whether it also takes **kwargs); a class is inspected through __init__."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in signature.parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    return names, var_kw


def required_parameters(factory: Callable[..., Any]) -> set[str]:
    """Keyword names `factory` requires (no default)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return set()
    return {p.name for p in signature.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty}
