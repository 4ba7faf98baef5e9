"""Find a search space by reference: a built-in name, a TOML/YAML file, or ``module.py:NAME``."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from gapsweep.errors import SpaceError, one_line
from gapsweep.search_spaces.space import SearchSpace

BUILTIN_DIR = Path(__file__).parent


def builtin_names() -> list[str]:
    """Names accepted by ``load_space`` without a path: one per shipped ``*.toml``."""
    return sorted(path.stem for path in BUILTIN_DIR.glob("*.toml"))


def load_space(ref: str | os.PathLike[str] | SearchSpace | dict[str, Any]) -> SearchSpace:
    """Resolve ``ref`` to a validated ``SearchSpace``.

    ``ref`` may already be a space (Python users), a dict in the declarative form, a built-in
    name such as ``mlp``, a ``.toml``/``.yaml`` file, or ``path/to/module.py:NAME`` where NAME is
    a ``SearchSpace``, a dict, or a function returning either.
    """
    if isinstance(ref, SearchSpace):
        return ref
    if isinstance(ref, dict):
        return SearchSpace.from_dict(ref)
    if isinstance(ref, os.PathLike):  # a pathlib.Path names a space file as its text does
        ref = os.fspath(ref)
    if not isinstance(ref, str):
        raise SpaceError(f"a space is a built-in name, a .toml/.yaml file, 'module.py:NAME', a dict or a SearchSpace, got {ref!r}")
    if ref in builtin_names():
        return _from_file(BUILTIN_DIR / f"{ref}.toml")
    if ".py:" in ref:
        return _from_python(ref)
    path = Path(ref)
    if path.suffix.lower() in {".toml", ".yaml", ".yml", ".json"}:
        return _from_file(path)  # JSON is YAML
    raise SpaceError(
        f"unknown search space '{ref}': use a built-in name ({', '.join(builtin_names())}), "
        "a .toml/.yaml/.json file, or module.py:NAME"
    )


class _YamlLoader(yaml.SafeLoader):
    """YAML as sweep files mean it: ``1e-5`` is a number (as in TOML and JSON; YAML 1.1 wants
    ``1.0e-5``), and a key given twice is a mistake, not the last one winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def read_document(path: Path) -> dict[str, Any]:
    """Parse a TOML or YAML (or JSON) file into a dict; a parse error becomes one line naming the file."""
    if not path.is_file():
        raise SpaceError(f"file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpaceError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        if path.suffix.lower() == ".toml":
            doc: Any = tomllib.loads(text)
        else:
            doc = yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0]
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        if mark is not None and problem:  # YAML's first line names only the construct it was in
            reason = f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
        raise SpaceError(f"{path} is not valid {path.suffix.lstrip('.').upper()}: {reason}") from None
    if not isinstance(doc, dict):
        raise SpaceError(f"{path} must hold a table of parameters at the top level")
    return doc


def _from_file(path: Path) -> SearchSpace:
    doc = read_document(path)
    # A space file may hold the parameters at top level or under [space] like a sweep file.
    raw = doc.get("space", doc) if isinstance(doc.get("space"), dict) else doc
    try:
        return SearchSpace.from_dict(raw)
    except SpaceError as exc:
        raise SpaceError(f"{path}: {exc}") from None


def python_object(ref: str, what: str) -> Any:
    """Import the file of ``path/to/module.py:NAME`` and return its ``NAME``; ``what`` names the
    reference in errors (a search space, a hypermodel)."""
    file_part, _, attr = ref.rpartition(":")
    path = Path(file_part)
    if not path.is_file():
        raise SpaceError(f"file not found: {path} (from {what} '{ref}')")
    module_name = f"gapsweep_user_space_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.append(folder)  # its sibling modules import as when the file runs as a script
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise SpaceError(f"{exc.filename or path} line {exc.lineno}: SyntaxError: {exc.msg} (in {what} '{ref}')") from None
    except Exception as exc:  # the user's code ran: whatever it raises is named in one line
        del sys.modules[module_name]
        raise SpaceError(f"importing {path} (the {what} '{ref}') raised {one_line(exc)}") from None
    if not hasattr(module, attr):
        raise SpaceError(f"{path} has no attribute '{attr}'")
    return getattr(module, attr)


def _from_python(ref: str) -> SearchSpace:
    value = python_object(ref, "search space")
    if callable(value) and not isinstance(value, SearchSpace):
        value = value()
    if isinstance(value, (SearchSpace, dict)):
        return load_space(value)
    raise SpaceError(
        f"{ref} must be a SearchSpace, a dict, or a function returning one; got {type(value).__name__}"
    )
