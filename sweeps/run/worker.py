"""Workers: continue a study on any machine that knows only its name and the database URL.

The study carries its configuration (``gapsweep.config``), so ``gapsweep worker --study NAME
--storage URL`` needs nothing else. One worker per GPU (or per CPU core) is the pattern; start as
many as you like, on as many machines as reach the database.

TensorFlow does not give memory back between models in one process, and Keras leaves Python
objects behind that slow ``gc`` down over hundreds of models. A worker therefore runs at most
``trials_per_process`` trials and then replaces itself with a fresh process (``exec``: same PID,
same arguments), so its memory and speed stay flat however long it runs.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Sequence

from gapsweep import checks
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.launch import check_log_file, graceful_stop, has_work, prepare, run_trials


def work(
    config: SweepConfig,
    *,
    trials_per_process: int,
    progress: bool | None,
    argv: Sequence[str] | None,
    job: int | None = None,
    log_file: str | Path | None = None,
    stop_at: float | None = None,
) -> int:
    """Run trials of ``config``'s study in this process; ``exec`` a fresh one to go on.

    Returns the number of trials this process ran; raises ``KeyboardInterrupt`` once they are
    done when a signal asked it to stop (the study may still need work). ``argv`` is the command line to re-run
    after ``trials_per_process`` trials (None: never re-exec, as in tests). ``job``: this worker
    is job K of ``launch --jobs`` (see ``Sweep.job``). ``stop_at``: wall-clock time after which
    no trial starts (it survives the re-exec, where a timeout would restart).
    """
    checks.whole("--trials-per-process", trials_per_process, 1)
    check_log_file(log_file)
    sweep = prepare(config, salt=f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}")
    sweep.job = job
    try:
        with graceful_stop(sweep):
            ran = run_trials(sweep, max_trials=trials_per_process, progress=progress, log_file=log_file, stop_at=stop_at)
        more = not sweep.stop_requested and ran == trials_per_process and has_work(sweep) is not None
    finally:
        sweep.close()
    if more and argv is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "gapsweep.cli", *argv])
    if sweep.stop_requested:
        raise KeyboardInterrupt
    return ran
