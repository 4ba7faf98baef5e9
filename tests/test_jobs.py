"""`launch --jobs N`: several trials at once in worker processes on one study, as real processes
on a real database: the exact budget, the same trials from the same seed, Ctrl-C, a killed job."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.exc import SQLAlchemyError

from gapsweep.api import list_studies, list_trials
from gapsweep.cli import main
from gapsweep.errors import GapsweepError
from gapsweep.sweeps.data.datasets import DataSpec
from gapsweep.sweeps.run.config import SweepConfig
from gapsweep.sweeps.run.jobs import JobPool, JobSpec, default_jobs, usable_cores
from gapsweep.sweeps.run.launch import launch
from gapsweep.sweeps.trial.objective import ObjectiveSettings

GAPSWEEP = str(Path(sys.executable).parent / "gapsweep")
# Fast heartbeats, so a killed job's trial is retried within seconds.
ENV = {**os.environ, "GAPSWEEP_HEARTBEAT_S": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _space_file(folder: Path, space: dict, epochs: int) -> Path:
    """A space as a TOML file, for `gapsweep launch` in a subprocess."""
    space = {**space, "epochs": {"type": "fixed", "value": epochs}}
    lines = []
    for name, spec in space.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value)}" for key, value in spec.items()]
    path = folder / f"space-{epochs}.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


def _launch_argv(url: str, space: Path, trials: int, *extra: str) -> list[str]:
    return [
        "launch", "--study", "jobs", "--data", "digits", "--train-fraction", "0.3", "--space", str(space),
        "--trials", str(trials), "--pruner", "none", "--patience", "50", "--storage", url, "--no-progress", *extra,
    ]


def _states(url: str) -> list[str]:
    """The study's trial states; none while launch has not created the study yet."""
    try:
        return [t.state for t in list_trials("jobs", url)]
    except (GapsweepError, SQLAlchemyError):  # not created yet, or being created
        return []


def _wait_for(condition, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


# --- quick: flags and defaults -------------------------------------------------------------


def test_the_default_is_one_job_per_core_or_per_gpu_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv("GAPSWEEP_JOBS")
    assert default_jobs(None) == usable_cores() == len(os.sched_getaffinity(0))
    assert default_jobs(["none"]) == usable_cores()
    assert default_jobs(["0", "1", "3"]) == 3
    monkeypatch.setenv("GAPSWEEP_JOBS", "5")
    assert default_jobs(["0", "1"]) == 5


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (["--jobs", "0"], None, "--jobs must be a whole number >= 1, got 0"),
        (["--gpu", "0,x"], None, "--gpu takes GPU indices"),
        ([], "many", "GAPSWEEP_JOBS must be a whole number >= 1"),
    ],
)
def test_bad_job_settings_fail_in_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys, flags, env, message):
    if env is not None:
        monkeypatch.setenv("GAPSWEEP_JOBS", env)
    url = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["launch", "--study", "x", "--data", "digits", "--storage", url, *flags]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "none.db").exists()


def test_jobs_get_their_gpus_in_turn_and_never_the_storage_url_on_their_command_line(tmp_path):
    spec = JobSpec(
        study="s", storage="postgresql://me:secret@db/sweeps", code_dir=str(tmp_path), log_file=tmp_path / "x.log",
        gpus=["0", "1"],
    )
    argvs = [spec.argv(index, threads=2) for index in range(3)]
    assert [argv[argv.index("--gpu") + 1] for argv in argvs] == ["0", "1", "0"]
    assert all("secret" not in " ".join(argv) for argv in argvs)
    assert argvs[2][argvs[2].index("--job") + 1] == "2" and argvs[2][argvs[2].index("--threads") + 1] == "2"


def _children() -> list[int]:
    """This process's child processes, as the kernel lists them."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(") ", 1)[1].split()[1]) == os.getpid():
                pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process table from /proc")
def test_a_launch_that_fails_to_prepare_ends_the_jobs_it_started_unused(tmp_path, monkeypatch, capsys):
    """The jobs start before launch prepares the study (their TensorFlow imports overlap it); a
    mistake found while preparing ends them at once, and nothing is written."""
    started, add = [], JobPool.add

    def counted(self: JobPool, index: int, **kwargs) -> None:
        started.append(index)
        add(self, index, **kwargs)

    monkeypatch.setattr(JobPool, "add", counted)
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n3,4\n")
    url = f"sqlite:///{tmp_path / 'none.db'}"
    argv = ["launch", "--study", "x", "--data", str(tmp_path / "rows.csv"), "--target", "nope", "--storage", url]
    assert main([*argv, "--jobs", "3"]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1
    assert len(started) == 2 and not _children()  # both started, both ended and reaped
    assert not (tmp_path / "none.db").exists()


# --- slow: real processes ------------------------------------------------------------------


@pytest.mark.slow
def test_a_gpu_that_tensorflow_cannot_see_is_refused_before_anything_is_written(tmp_path):
    """On a machine without that GPU (CUDA_VISIBLE_DEVICES=7 hides any other), no quiet CPU fallback."""
    url = f"sqlite:///{tmp_path / 'g.db'}"
    done = subprocess.run(
        [GAPSWEEP, "launch", "--data", "wine", "--study", "g", "--storage", url, "--gpu", "7", "--jobs", "1", "--no-progress"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("gapsweep:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(errors) == 1 and "--gpu 7: TensorFlow sees no GPU there" in errors[0], done.stderr
    assert not (tmp_path / "g.db").exists()
    # TensorFlow's import-time lines that no log level silences are held back.
    assert "absl::InitializeLog" not in done.stderr and "oneDNN custom operations" not in done.stderr


def test_one_job_trains_in_this_process_as_before(tmp_path, tiny_space):
    url = f"sqlite:///{tmp_path / 'one.db'}"
    # The suite's GAPSWEEP_JOBS=1 is the default here, as --jobs 1 would be.
    assert main(_launch_argv(url, _space_file(tmp_path, tiny_space, 2), 2)) == 0
    trials = list_trials("jobs", url)
    assert [t.state for t in trials] == ["COMPLETE"] * 2
    assert {int(t.attrs["worker"].rsplit(":", 1)[1]) for t in trials} == {os.getpid()}


@pytest.mark.slow
def test_two_jobs_spend_exactly_the_budget_without_duplicates_and_repeat_with_their_seed(tmp_path, tiny_space, monkeypatch):
    monkeypatch.setenv("GAPSWEEP_HEARTBEAT_S", "1")
    budget = 6
    drawn = []
    for run in ("a", "b"):
        url = f"sqlite:///{tmp_path / f'{run}.db'}"
        config = SweepConfig(
            study="jobs", space={**tiny_space, "epochs": {"type": "fixed", "value": 3}},
            data=DataSpec("digits", train_fraction=0.3), trials=budget, storage=url, pruner="none", sampler="random",
            seed=7, objective=ObjectiveSettings(patience=50, keep_models=1),
        )
        launch(config, jobs=2, progress=False)
        trials = list_trials("jobs", url)
        assert [t.state for t in trials] == ["COMPLETE"] * budget  # exactly the budget: none more, none running
        params = [tuple(sorted(t.params.items())) for t in trials]
        assert len(set(params)) == budget  # no two jobs drew the same trial
        assert os.getpid() in {int(t.attrs["worker"].rsplit(":", 1)[1]) for t in trials}  # launch is job 0
        drawn.append(set(params))
    assert drawn[0] == drawn[1]  # the same seed and jobs: the same trials, however the jobs interleaved


@pytest.mark.slow
def test_jobs_a_nearly_spent_budget_does_not_need_end_unused_and_unreported(tmp_path, tiny_space, capfd):
    url = f"sqlite:///{tmp_path / 'few.db'}"
    assert main(_launch_argv(url, _space_file(tmp_path, tiny_space, 2), 1, "--jobs", "3")) == 0
    err = capfd.readouterr().err
    assert [t.state for t in list_trials("jobs", url)] == ["COMPLETE"]
    assert "died" not in err and not _children()


def test_a_job_launch_stopped_is_not_reported_dead_and_one_killed_behind_its_back_is(tmp_path, monkeypatch, capsys):
    """Stand-in jobs (``sleep``): launch's own SIGTERM (e.g. after its own trials failed) may end a
    job before the job's handler is set; only a job that ended by no signal of launch's died."""
    monkeypatch.setattr(JobSpec, "argv", lambda self, index, threads, **kwargs: ["sleep", "60"])
    spec = JobSpec(study="s", storage=None, code_dir=str(tmp_path), log_file=tmp_path / "x.log")
    for stopped_by_launch in (True, False):
        pool = JobPool(spec, 2, threads=1)
        pool.start(2)
        victim = pool.running()[0]
        if stopped_by_launch:
            pool.stop()
        else:
            victim.process.kill()
            pool.stop()  # the other one: launch then stops it
        pool.wait(lambda: None, until=lambda: True, on_error=lambda: None)
        pool.close()
        died = pool.outcome.died
        assert died == ([] if stopped_by_launch else [f"job 1 (pid {victim.process.pid}) died (SIGKILL)"]), died
    assert "died (SIGKILL)" in capsys.readouterr().err


@pytest.mark.slow
def test_a_timeout_counts_from_the_first_trial_with_jobs_as_with_one(tmp_path, tiny_space):
    """The clock starts once the study is prepared, as with one job: launch's own first trial
    (which starts TensorFlow) always runs, where a clock started with the jobs ran none."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    done = subprocess.run(
        [GAPSWEEP, *_launch_argv(url, _space_file(tmp_path, tiny_space, 2), 20, "--jobs", "2", "--timeout", "1")],
        env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    spent = _states(url).count("COMPLETE")
    assert 1 <= spent < 20 and f"ended this launch at {spent} of 20 trials" in done.stderr


def test_a_job_replaced_after_its_trials_runs_at_once_to_the_stop_time_it_was_sent():
    from gapsweep.sweeps.run.jobs import replacement_argv

    argv = ["worker", "--study", "s", "--job", "1", "--await-start"]
    assert replacement_argv(argv, 12.5) == ["worker", "--study", "s", "--job", "1", "--stop-at", "12.5"]
    assert replacement_argv(["worker", "--stop-at", "3.0"], 3.0) == ["worker", "--stop-at", "3.0"]
    assert replacement_argv(argv, None) == argv[:-1]


@pytest.mark.slow
def test_ctrl_c_lets_every_job_finish_its_trial_and_a_relaunch_spends_the_rest(tmp_path, tiny_space):
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    budget = 8
    space = _space_file(tmp_path, tiny_space, 12)
    process = subprocess.Popen(
        [GAPSWEEP, *_launch_argv(url, space, budget, "--jobs", "2")],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for(lambda: "COMPLETE" in _states(url) and "RUNNING" in _states(url))
    process.send_signal(signal.SIGINT)  # to launch alone, as a Ctrl-C at the terminal is
    out, err = process.communicate(timeout=240)
    assert process.returncode == 130, err
    assert "finish their current trials" in err and "launch study 'jobs' again" in err
    assert "study 'jobs':" in out  # the summary, once
    after = _states(url)
    assert "RUNNING" not in after and "FAIL" not in after and len(after) < budget  # finished, not dropped
    assert main(_launch_argv(url, space, budget, "--jobs", "1")) == 0
    assert _states(url).count("COMPLETE") == budget


@pytest.mark.slow
def test_a_killed_job_loses_no_trial_and_the_sweep_spends_the_budget(tmp_path, tiny_space):
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    budget = 6
    space = _space_file(tmp_path, tiny_space, 10)
    process = subprocess.Popen(
        [GAPSWEEP, *_launch_argv(url, space, budget, "--jobs", "2")],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    victim: list[int] = []

    def kill_a_running_job() -> bool:
        for trial in list_trials("jobs", url) if _states(url) else []:
            pid = int(trial.attrs["worker"].rsplit(":", 1)[1]) if "worker" in trial.attrs else None
            if trial.state == "RUNNING" and pid not in (None, process.pid):  # a job, not launch (job 0)
                victim.append(trial.number)
                os.kill(pid, signal.SIGKILL)
                return True
        return False

    _wait_for(kill_a_running_job)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "died (SIGKILL)" in err
    states = _states(url)
    assert states.count("COMPLETE") == budget and "RUNNING" not in states and "WAITING" not in states
    assert list_studies(url)[0].counts["RUNNING"] == 0


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_jobs_of_a_killed_launch_finish_their_trials_and_stop(tmp_path, tiny_space):
    url = f"sqlite:///{tmp_path / 'orphans.db'}"
    process = subprocess.Popen(
        [GAPSWEEP, *_launch_argv(url, _space_file(tmp_path, tiny_space, 12), 30, "--jobs", "2")],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    _wait_for(lambda: "COMPLETE" in _states(url) and "RUNNING" in _states(url))
    jobs = {int(t.attrs["worker"].rsplit(":", 1)[1]) for t in list_trials("jobs", url) if "worker" in t.attrs}
    process.kill()
    process.wait()
    _wait_for(lambda: not any(_alive(pid) for pid in jobs), timeout=120)
    states = _states(url)
    assert "FAIL" not in states and "WAITING" not in states  # the jobs' trials finished, not dropped
    # Only launch's own trial (it is job 0) is left running, for a later launch or reap to retry.
    running = [t for t in list_trials("jobs", url) if t.state == "RUNNING"]
    assert len(running) <= 1 and all(t.attrs.get("worker", f":{process.pid}").endswith(f":{process.pid}") for t in running)
    assert len(states) < 30
