"""Code references (``path/to/module.py:NAME``): stored relative to the project folder, imported
only from inside it.

A study stores the reference to its KerasTuner hypermodel, and every worker imports that file.
Stored as an absolute path, a study launched from ``~/project`` on a laptop could not run on a
GPU server whose checkout is ``/workspace/project``; and anyone who can write to the database
could make every worker execute any file on its machine. So a reference is stored relative to
the project folder (a sweep file's folder, or the current folder for ``--hypermodel`` and Python
callers), and a worker resolves it against its own ``--code-dir``; a reference that leaves that
folder (an absolute path elsewhere, ``..``, a symbolic link pointing out) is refused before
anything is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gapsweep.errors import ConfigError, SpaceError

#: How to mend a reference that leaves the project folder; an absolute one may come from older gapsweep.
_RELATIVE_HINT = (
    "put the file inside the project folder (a sweep file's folder, the current folder for --hypermodel, "
    "a worker's --code-dir) and refer to it from there"
)
_ABSOLUTE_HINT = (
    f"{_RELATIVE_HINT}; a study stored with an absolute path by an older gapsweep runs on a worker given "
    "--code-dir set to a folder that holds the file"
)


@dataclass(frozen=True)
class CodeRef:
    """A located ``module.py:NAME``: what the study stores, and the file this machine imports."""

    #: The file relative to the project folder, ``/``-separated, then ``:NAME``: the same on every machine.
    stored: str
    #: The file on this machine, inside the project folder (symbolic links resolved).
    file: Path
    name: str

    @property
    def importable(self) -> str:
        """``/abs/path/module.py:NAME`` for ``loader.python_object``."""
        return f"{self.file}:{self.name}"


def is_ref(ref: str) -> bool:
    """Whether ``ref`` reads ``path/to/module.py:NAME``."""
    file_part, colon, name = ref.rpartition(":")
    return bool(colon) and file_part.endswith(".py") and name.isidentifier()


def locate(ref: str, project: str | Path | None, what: str = "hypermodel") -> CodeRef:
    """Find ``ref``'s file inside ``project`` (None: the current folder).

    A relative path is read from ``project``; an absolute one (stored by older gapsweep) is
    accepted only where it lies inside ``project``. Anything else is a ``ConfigError``, and a
    missing file a ``SpaceError``, both raised before any code is imported.
    """
    file_part, _, name = ref.rpartition(":")
    root = Path(project if project is not None else os.getcwd()).resolve()
    given = Path(file_part)
    file = (given if given.is_absolute() else root / given).resolve()
    if not file.is_relative_to(root):
        hint = _ABSOLUTE_HINT if given.is_absolute() else _RELATIVE_HINT
        raise ConfigError(
            f"{what} '{ref}' leads outside the project folder {root}, and gapsweep imports code only "
            f"from inside it; {hint}"
        )
    if not file.is_file():
        raise SpaceError(
            f"file not found: {file} ({what} '{ref}' in the project folder {root}); "
            "run from the project's checkout, or give a worker --code-dir PROJECT_FOLDER"
        )
    return CodeRef(f"{file.relative_to(root).as_posix()}:{name}", file, name)


def same_file(first: str, second: str, project: str | Path | None) -> bool:
    """Whether two references name the same file and name inside ``project``: an older study's
    absolute reference and the relative one gapsweep stores now."""
    try:
        return locate(first, project).stored == locate(second, project).stored
    except (ConfigError, SpaceError):
        return False
