"""Parallel trials for ``launch --jobs N``: ``launch`` itself and N − 1 ``gapsweep worker``
processes on one study.

One TensorFlow process trains on about one core, so a sweep that runs one trial at a time leaves
the other cores idle. The jobs start first and import TensorFlow while ``launch`` prepares the
study; then ``launch`` starts them and trains beside them, as job 0. The study-wide claim lock
keeps the budget exact, as for workers started by hand.

Each job is a fresh interpreter (``python -m gapsweep.cli worker``), never a fork of a process that
may have imported TensorFlow, and it replaces itself every ``--trials-per-process`` trials as every
worker does, so memory stays flat; ``launch`` hands its own place to a fresh job after as many.
Jobs run in their own process group: a Ctrl-C at the terminal reaches only ``launch``, which
passes it on once, so the first Ctrl-C lets every job finish its trial and a second stops them at
once, as it stops a worker. A job whose ``launch`` died gets SIGHUP from the kernel and stops
after its trial.
"""

from __future__ import annotations

import contextlib
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
from typing import Callable, Iterator, Sequence

from tqdm import tqdm

from gapsweep import env
from gapsweep.errors import ConfigError
from gapsweep.sweeps.trial.runtime import init_tensorflow

#: Trials a process trains before a fresh one takes its place (a worker's ``--trials-per-process``).
TRIALS_PER_PROCESS = 25

#: Seconds between looks at the jobs (and the study's progress).
POLL_S = 0.5

#: How a job's ``gapsweep`` reports a user mistake or a failed sweep: the line ``launch`` raises.
_ERROR_PREFIX = "gapsweep: error: "

#: ``prctl`` option that sends the child a signal when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0))


def parse_gpus(given: str | int | Sequence[str | int] | None, name: str = "--gpu") -> list[str] | None:
    """``--gpu 0,1`` (from Python also ``"0,1"``, ``[0, 1]`` or ``0``) as ``["0", "1"]``; ``none``
    (train on the CPU) as ``["none"]``; None as None. ``name``: the argument, for the message."""
    if given is None:
        return None
    text = ",".join(map(str, given)) if isinstance(given, (list, tuple)) else str(given)
    gpus = [part.strip() for part in text.split(",")]
    if gpus != ["none"] and not all(gpu.isdigit() for gpu in gpus):
        raise ConfigError(f"{name} takes GPU indices such as 0 or 0,1, or 'none' for the CPU, got {given!r}")
    return gpus


def default_jobs(gpus: Sequence[str] | None) -> int:
    """``$GAPSWEEP_JOBS`` when set; else one job per GPU given; else one per usable core."""
    default = len(gpus) if gpus and gpus != ["none"] else usable_cores()
    return int(env.number("GAPSWEEP_JOBS", default, minimum=1, whole=True, meaning="trials trained at once"))


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


def use_device(gpu: str | None, threads: int | None = None) -> str:
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

    def argv(self, index: int, threads: int, *, waiting: bool = False, stop_at: float | None = None) -> list[str]:
        """Job ``index``'s command line; a ``waiting`` job imports TensorFlow, then waits for a
        start line on stdin. ``stop_at``: the wall-clock time (``time.time()``) after which it
        starts no trial. The storage URL travels in the environment instead, since ``ps`` shows
        command lines and a URL may hold a password."""
        argv = [
            sys.executable, "-m", "gapsweep.cli", "worker", "--study", self.study, "--code-dir", self.code_dir,
            "--log-file", str(self.log_file), "--threads", str(threads), "--job", str(index), "--no-progress",
            "--launch-pid", str(os.getpid()),
        ]
        if self.gpus:
            argv += ["--gpu", self.gpus[index % len(self.gpus)]]
        if stop_at is not None:
            argv += ["--stop-at", repr(stop_at)]
        if waiting:
            argv.append(AWAIT_START)
        return argv


#: The flag of a job started before its study is ready, and the line that starts it.
AWAIT_START = "--await-start"
_START_LINE = "start"


def await_start() -> tuple[bool, float | None]:
    """In a waiting job: block until ``launch`` says start (True, with the time to stop starting
    trials, if any) or ends the job unused (False)."""
    words = sys.stdin.readline().split()
    if not words or words[0] != _START_LINE:
        return False, None
    return True, float(words[1]) if len(words) > 1 else None


def replacement_argv(argv: Sequence[str], stop_at: float | None) -> list[str]:
    """The command line a job re-executes itself with: it runs at once, and keeps the stop time
    a waiting job was sent on stdin."""
    again = [arg for arg in argv if arg != AWAIT_START]
    if stop_at is not None and "--stop-at" not in again:
        again += ["--stop-at", repr(stop_at)]
    return again


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

    def __init__(self, index: int, process: subprocess.Popen[str], *, waiting: bool) -> None:
        self.index = index
        self.process = process
        self.waiting = waiting  # started ahead and not yet told to run
        self.error: str | None = None
        self.signals = 0  # signals passed on to it
        self.relay = threading.Thread(target=self._relay, name=f"gapsweep-job-{index}", daemon=True)
        self.relay.start()

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

    def tell(self, run: bool, stop_at: float | None = None) -> None:
        """Start a waiting job (to start no trial after ``stop_at``), or end it unused (it has
        touched nothing yet)."""
        self.waiting = False
        assert self.process.stdin is not None
        if not run:
            self.process.kill()
        with contextlib.suppress(OSError):  # it died meanwhile: _wait reports it
            if run:
                self.process.stdin.write(_START_LINE + ("" if stop_at is None else f" {stop_at!r}") + "\n")
            self.process.stdin.close()


class JobPool:
    """The worker processes of ``launch --jobs N`` besides ``launch`` itself, which trains too.

    They are started before ``launch`` prepares the study, so their TensorFlow imports (seconds
    of CPU each) overlap its own work, and each waits for ``start``; the ones a nearly spent
    budget does not need end unused. SIGINT/SIGTERM that ``launch`` receives are passed on to
    every job (``passing_signals``).
    """

    def __init__(self, spec: JobSpec, count: int, *, threads: int) -> None:
        self.spec = spec
        self.threads = threads
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        if spec.storage is not None:
            self.env["GAPSWEEP_STORAGE"] = spec.storage
        self.outcome = Outcome()
        self.stop_at: float | None = None
        self.jobs: list[_Job] = []
        self._unused: list[_Job] = []
        self._lock = threading.Lock()
        self._stops: list[int] = []  # the signals received, in order
        for index in range(1, count + 1):
            self.add(index, waiting=True)

    def add(self, index: int, *, waiting: bool = False) -> None:
        """Start job ``index`` (one that runs at once, to the stop time ``start`` set, unless ``waiting``)."""
        process = subprocess.Popen(
            self.spec.argv(index, self.threads, waiting=waiting, stop_at=None if waiting else self.stop_at), env=self.env,
            stdin=subprocess.PIPE if waiting else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, process_group=0,
        )
        with self._lock:
            self.jobs.append(_Job(index, process, waiting=waiting))

    def start(self, count: int, *, stop_at: float | None = None) -> None:
        """Let the first ``count`` waiting jobs run, to start no trial after ``stop_at`` (a
        ``time.time()``); the others end unused."""
        self.stop_at = stop_at
        for position, job in enumerate(self._waiting()):
            self._tell(job, run=position < count)

    def _tell(self, job: _Job, *, run: bool) -> None:
        job.tell(run, self.stop_at)
        if not run:  # killed unused: reaped by close, never reported as dead
            with self._lock:
                self.jobs.remove(job)
            self._unused.append(job)

    def running(self) -> list[_Job]:
        with self._lock:
            return [job for job in self.jobs if not job.waiting and job.process.poll() is None]

    def close(self) -> None:
        """End the jobs never started (``launch`` failed first) and reap every process."""
        for job in self._waiting():
            self._tell(job, run=False)
        self.stop()  # launch failed while they ran: they finish their trials, then stop
        with self._lock:
            jobs = [*self.jobs, *self._unused]
        for job in jobs:
            job.process.wait()
            job.relay.join()

    def _waiting(self) -> list[_Job]:
        with self._lock:
            return [job for job in self.jobs if job.waiting]

    def stop(self) -> None:
        """Have every running job finish its trial, then stop. A job already signalled (a first
        Ctrl-C passed on) is doing so: a second signal would stop it at once."""
        for job in self.running():
            if not job.signals:
                job.signal(signal.SIGTERM)

    def signal(self, signum: int) -> None:
        """Pass ``signum`` on to every running job."""
        self._stops.append(signum)
        self.outcome.interrupted = True
        for job in self.running():
            job.signal(signum)

    @contextlib.contextmanager
    def passing_signals(self, *, first: Callable[[], None], again: Callable[[], None]) -> Iterator[None]:
        """While in the block, SIGINT/SIGTERM to ``launch`` go to every job too: the first lets
        each finish its trial (``first`` does the same for ``launch``'s own), the second stops
        them at once (``again``). Signals are the main thread's: elsewhere this does nothing."""

        def forward(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if not self._stops:
                tqdm.write(
                    f"gapsweep: {name}: {len(self.running()) + 1} job(s) finish their current trials, then stop "
                    "(send it again to stop them now)", file=sys.stderr,
                )
            elif len(self._stops) == 1:
                tqdm.write(f"gapsweep: {name} again: stopping the jobs now; their running trials are queued again", file=sys.stderr)
            self.signal(signum)
            (first if len(self._stops) == 1 else again)()

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def wait(self, poll: Callable[[], None], *, until: Callable[[], bool], on_error: Callable[[], None]) -> None:
        """Until ``until()`` holds and every started job has ended: report the ones that die;
        on a job's error, stop the rest (``on_error`` stops ``launch``'s own trials). Calls
        ``poll`` (the progress bar) between looks."""
        outcome = self.outcome
        while True:
            time.sleep(POLL_S if not until() else POLL_S / 10)  # once launch is done, its jobs' ends are all it waits for
            poll()
            with self._lock:
                ended = [job for job in self.jobs if not job.waiting and job.process.poll() is not None]
                self.jobs = [job for job in self.jobs if job not in ended]
                alive = any(not job.waiting for job in self.jobs)
            for job in ended:
                job.relay.join()
                code = job.process.returncode
                if job.error is not None:
                    if outcome.error is None:
                        outcome.error = job.error
                        on_error()
                        self.stop()
                elif code != 0 and not (job.signals and (code == 130 or -code in (signal.SIGINT, signal.SIGTERM))):
                    # A job that launch stopped (by a signal that may come before its handler is set) did not die.
                    how = signal.Signals(-code).name if code < 0 else f"exit status {code}"
                    line = f"job {job.index} (pid {job.process.pid}) died ({how})"
                    outcome.died.append(line)
                    tqdm.write(
                        f"gapsweep: {line}; its running trial is queued again once its heartbeat is stale, and the "
                        "other job(s) go on", file=sys.stderr,
                    )
            if not alive and until():
                break
        poll()


def die_with_launch(launch_pid: int) -> None:
    """Have the kernel send this job SIGHUP when ``launch`` dies (Linux), so no job trains on
    unseen after a ``kill -9`` of ``launch``: it finishes its trial and stops.

    SIGHUP, not SIGTERM: the kernel sends it again as each of launch's threads exits, and a job
    takes any number of SIGHUPs as one request to stop (``graceful_stop``), where a second SIGTERM
    would stop it at once."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)
    if os.getppid() != launch_pid:  # launch died before the line above
        os.kill(os.getpid(), signal.SIGHUP)
