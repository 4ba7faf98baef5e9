"""Parallel trials for ``launch --jobs N``: N ``gapsweep worker`` processes on one study.

One TensorFlow process trains on about one core, so a sweep that runs one trial at a time leaves
the other cores idle. ``launch`` prepares the study once, in its own process, then starts N workers
on it; the study-wide claim lock keeps the budget exact, as for workers started by hand.

Each job is a fresh interpreter (``python -m gapsweep.cli worker``), never a fork of a process that
may have imported TensorFlow, and it replaces itself every ``--trials-per-process`` trials as every
worker does, so memory stays flat. Jobs run in their own process group: a Ctrl-C at the terminal
reaches only ``launch``, which passes it on once, so the first Ctrl-C lets every job finish its
trial and a second stops them at once, as it stops a worker. A job whose ``launch`` died
gets SIGHUP from the kernel and stops after its trial.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Callable, Sequence

from tqdm import tqdm

from gapsweep import env
from gapsweep.errors import ConfigError
from gapsweep.sweeps.trial.runtime import init_tensorflow

#: Seconds between looks at the jobs (and the study's progress).
POLL_S = 0.5

#: How a job's ``gapsweep`` reports a user mistake or a failed sweep: the line ``launch`` raises.
_ERROR_PREFIX = "gapsweep: error: "

#: ``prctl`` option that sends the child a signal when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0))


def parse_gpus(text: str | None) -> list[str] | None:
    """``--gpu 0,1`` as ``["0", "1"]``; ``none`` (train on the CPU) as ``["none"]``; None as None."""
    if text is None:
        return None
    gpus = [part.strip() for part in text.split(",")]
    if gpus != ["none"] and not all(gpu.isdigit() for gpu in gpus):
        raise ConfigError(f"--gpu takes GPU indices such as 0 or 0,1, or 'none' for the CPU, got '{text}'")
    return gpus


def default_jobs(gpus: Sequence[str] | None) -> int:
    """``$GAPSWEEP_JOBS`` when set; else one job per GPU given; else one per usable core."""
    default = len(gpus) if gpus and gpus != ["none"] else usable_cores()
    return int(env.number("GAPSWEEP_JOBS", default, minimum=1, whole=True, meaning="trials trained at once"))


def check_jobs(jobs: int) -> int:
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    return jobs


def select_device(gpu: str | None) -> None:
    """Pin this process to one GPU (``"0"``, ``"1"``…) or to the CPU (``"none"``).

    Must run before TensorFlow is imported: CUDA reads ``CUDA_VISIBLE_DEVICES`` once.
    """
    if gpu is None:
        return
    if "tensorflow" in sys.modules:
        raise RuntimeError("select_device must run before TensorFlow is imported")
    if gpu == "none":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    elif gpu.isdigit():
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    else:
        raise ConfigError(f"--gpu takes a GPU index such as 0 or 'none', got '{gpu}'")


def use_device(gpu: str | None, threads: int | None = 1) -> str:
    """Pin this process to ``gpu`` (``select_device``), start TensorFlow with ``threads`` and
    return the device it trains on; a GPU that TensorFlow cannot see is a mistake, not a quiet
    fall back to the CPU."""
    select_device(gpu)
    device = init_tensorflow(threads=threads)
    if gpu not in (None, "none") and device == "CPU":
        raise ConfigError(
            f"--gpu {gpu}: TensorFlow sees no GPU there (CUDA_VISIBLE_DEVICES={gpu}); check nvidia-smi and that "
            "the GPU build is installed (pip install 'gapsweep[gpu]'), or train on the CPU with --gpu none"
        )
    return device


@dataclass(frozen=True)
class JobSpec:
    """What every job of one launch shares: the study, where it lives, and how each job runs."""

    study: str
    storage: str | None
    code_dir: str
    log_file: Path
    gpus: Sequence[str] | None = None
    #: Wall-clock time (``time.time()``) after which jobs start no new trial; None: no timeout.
    stop_at: float | None = None

    def argv(self, index: int, threads: int) -> list[str]:
        """Job ``index``'s command line. The storage URL travels in the environment instead,
        since ``ps`` shows command lines and a URL may hold a password."""
        argv = [
            sys.executable, "-m", "gapsweep.cli", "worker", "--study", self.study, "--code-dir", self.code_dir,
            "--log-file", str(self.log_file), "--threads", str(threads), "--job", str(index), "--no-progress",
        ]
        if self.gpus:
            argv += ["--gpu", self.gpus[index % len(self.gpus)]]
        if self.stop_at is not None:
            argv += ["--stop-at", repr(self.stop_at)]
        return argv


@dataclass
class Outcome:
    """How the jobs ended."""

    interrupted: bool = False
    #: One line per job that died (killed, crashed) rather than ending on its own.
    died: list[str] = field(default_factory=list)
    #: The first error a job reported (its ``gapsweep: error:`` line, without the prefix).
    error: str | None = None


class _Job:
    """One running job: its process and a thread that passes its output on above the bar."""

    def __init__(self, index: int, process: subprocess.Popen[str]) -> None:
        self.index = index
        self.process = process
        self.error: str | None = None
        self.signals = 0  # signals passed on to it
        self.relay = threading.Thread(target=self._relay, name=f"gapsweep-job-{index}", daemon=True)

    def _relay(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            text = line.rstrip("\n")
            if text.startswith(_ERROR_PREFIX):
                self.error = self.error or text[len(_ERROR_PREFIX):]  # launch raises it once
            else:
                tqdm.write(text, file=sys.stderr)

    def signal(self, signum: int) -> None:
        self.signals += 1
        if self.process.returncode is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass  # it ended meanwhile


def run_jobs(spec: JobSpec, jobs: int, *, threads: int, poll: Callable[[], None]) -> Outcome:
    """Start ``jobs`` workers on ``spec.study`` and wait until every one has ended, calling
    ``poll`` (the progress bar) between looks. SIGINT/SIGTERM to this process is passed on to
    every job; a job's error stops the others after their trials."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    if spec.storage is not None:
        env["GAPSWEEP_STORAGE"] = spec.storage
    outcome = Outcome()
    running: list[_Job] = []
    stops: list[int] = []  # the signals received, in order

    def forward(signum: int, frame: FrameType | None) -> None:
        stops.append(signum)
        outcome.interrupted = True
        name = signal.Signals(signum).name
        if len(stops) == 1:
            tqdm.write(
                f"gapsweep: {name}: {len(running)} job(s) finish their current trials, then stop "
                "(send it again to stop them now)", file=sys.stderr,
            )
        elif len(stops) == 2:
            tqdm.write(f"gapsweep: {name} again: stopping the jobs now; their running trials are queued again", file=sys.stderr)
        for job in running:
            job.signal(signum)

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(jobs):
            if outcome.interrupted:
                break
            process = subprocess.Popen(
                spec.argv(index, threads), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, process_group=0, preexec_fn=_die_with_parent(os.getpid()),
            )
            job = _Job(index, process)
            running.append(job)
            for signum in stops[job.signals:]:  # a signal that came while it was being started
                job.signal(signum)
        for job in running:  # after every fork: preexec_fn must not run beside other threads
            job.relay.start()
        _wait(running, outcome, poll)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return outcome


def _wait(running: list[_Job], outcome: Outcome, poll: Callable[[], None]) -> None:
    """Until every job has ended: report the ones that die; on a job's error, stop the rest."""
    alive = list(running)
    while alive:
        time.sleep(POLL_S)
        poll()
        for job in [job for job in alive if job.process.poll() is not None]:
            alive.remove(job)
            job.relay.join()
            code = job.process.returncode
            if job.error is not None:
                if outcome.error is None:
                    outcome.error = job.error
                    for other in alive:
                        other.signal(signal.SIGTERM)  # finish the trial at hand, then stop
            elif (code < 0 and not (outcome.interrupted and -code in (signal.SIGINT, signal.SIGTERM))) or (
                code not in (0, 130) and not outcome.interrupted
            ):  # a job stopped by the signal launch passed on (before its handler was set) did not die
                how = signal.Signals(-code).name if code < 0 else f"exit status {code}"
                line = f"job {job.index} (pid {job.process.pid}) died ({how})"
                outcome.died.append(line)
                tqdm.write(
                    f"gapsweep: {line}; its running trial is queued again once its heartbeat is stale"
                    + (f", and the {len(alive)} other job(s) go on" if alive else ""),
                    file=sys.stderr,
                )
    poll()


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send the job SIGHUP when ``launch`` dies (Linux), so
    no job trains on unseen after a ``kill -9`` of ``launch``: it finishes its trial and stops.

    SIGHUP, not SIGTERM: the kernel sends it again as each of launch's threads exits, and a job
    takes any number of SIGHUPs as one request to stop (``graceful_stop``), where a second SIGTERM
    would stop it at once."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)
        if os.getppid() != parent:  # launch died before the line above
            os._exit(1)

    return arm
