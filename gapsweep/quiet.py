"""Importing TensorFlow and Keras without their import-time log lines on the user's terminal.

TensorFlow's C++ side writes two lines at import whatever ``TF_CPP_MIN_LOG_LEVEL`` says (absl
logs before it is initialized). Any module that imports Keras (the trainer, the builder's check
of an activation name) imports it inside ``without_import_noise`` so a command that fails on a
user's mistake still prints one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from typing import Iterator

#: What TensorFlow's C++ side writes at import whatever ``TF_CPP_MIN_LOG_LEVEL`` says (absl logs
#: before it is initialized); every other line written at import is passed on.
_IMPORT_NOISE = re.compile(r"All log messages before absl::InitializeLog|\] oneDNN custom operations are on")


@contextlib.contextmanager
def without_import_noise() -> Iterator[None]:
    """Pass on what the process writes to its stderr (fd 2) meanwhile, line by line as it comes,
    except ``_IMPORT_NOISE``: a warning that matters (a missing CUDA library, a CPU that lacks an
    instruction set) still shows, even when the import then kills the process."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (a closed or replaced stderr): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as source:
            for line in source:
                if not _IMPORT_NOISE.search(line.decode(errors="replace")):
                    os.write(saved, line)

    thread = threading.Thread(target=forward, name="gapsweep-import-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # drops the pipe's last writer: the thread reads to the end and stops
        thread.join(timeout=5)
        os.close(saved)
