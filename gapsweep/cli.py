"""The ``gapsweep`` command: launch sweeps and ask the database about them.

User mistakes (``GapsweepError``) print one line and exit 1; argparse usage errors exit 2;
Ctrl-C exits 130. Queries never import TensorFlow, so ``best``, ``trials`` and ``--help`` are fast.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from gapsweep import checks
from gapsweep.errors import GapsweepError
from gapsweep.storage.url import DEFAULT_URL

if TYPE_CHECKING:
    from gapsweep.sweeps.run.config import SweepConfig

EXIT_USER_ERROR = 1
#: What a shell reports for a process that SIGPIPE ended (128 + 13).
EXIT_BROKEN_PIPE = 141
EXIT_NOT_REPRODUCED = 3
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors in one line (exit 2), like every other gapsweep error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _storage_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        default=None,
        help=f"database URL (default: $GAPSWEEP_STORAGE or {DEFAULT_URL}); e.g. "
        "postgresql://user@host:5432/db?sslmode=require, with the password in $PGPASSWORD or ~/.pgpass "
        "(not on the command line, where ps shows it), or an Optuna journal file on a shared folder: "
        "journal:////shared/sweeps.log; launch and worker also take a storage proxy (gapsweep proxy): grpc://host:13000",
    )


def _study_flag(parser: argparse.ArgumentParser, required: bool = True, help: str = "study name") -> None:
    parser.add_argument("--study", required=required, default=None, help=help)


def _format_flags(parser: argparse.ArgumentParser, csv: bool = True) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print JSON for scripts")
    if csv:
        group.add_argument("--csv", action="store_true", help="print CSV for spreadsheets")


def _code_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--code-dir", default=".", metavar="PROJECT_FOLDER",
        help="this machine's checkout of the project: a study's hypermodel path is read relative to it, and "
        "a path that leads outside it is refused (default: the current folder)",
    )


def _param_range(text: str) -> tuple[str, tuple[float | None, float | None]]:
    """Parse ``NAME=LOW:HIGH`` (either bound may be empty) for ``--param``."""
    name, sep, bounds = text.partition("=")
    low, colon, high = bounds.partition(":")
    try:
        if not (name and sep and colon):
            raise ValueError
        lowest, highest = (float(low) if low else None), (float(high) if high else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=LOW:HIGH (e.g. units=32:128 or l2=:1e-3), got '{text}'") from None
    if lowest is not None and highest is not None and lowest > highest:
        raise argparse.ArgumentTypeError(f"'{text}': LOW is above HIGH; did you mean {name}={high}:{low}?")
    return name, (lowest, highest)


def _param_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--param", action="append", type=_param_range, default=[], metavar="NAME=LOW:HIGH",
        help="only trials whose numeric parameter lies in the range (repeatable; a bound may be empty)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gapsweep",
        description="Hyperparameter sweeps for Keras models that favour models which generalize: "
        "Optuna studies in a SQL database, pruned per epoch, scored by val loss plus a penalty "
        "on the train/val gap.",
    )
    from gapsweep import __version__

    parser.add_argument("--version", action="version", version=f"gapsweep {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    launch = commands.add_parser(
        "launch",
        help="run (or resume) a sweep",
        description="Run a sweep until the study holds --trials finished trials. A sweep file "
        "(TOML/YAML) may hold every setting; flags override it. Launching an existing study "
        "resumes it towards the same total budget. Trains one trial per usable core at once by default, "
        "this process and worker processes beside it (--jobs).",
    )
    launch.add_argument("sweep_file", nargs="?", help="sweep file (.toml/.yaml) with the settings below")
    _study_flag(launch, required=False, help="study name (default: the sweep file's, else 'gapsweep')")
    launch.add_argument("--space", help="built-in space (mlp, the default, or cnn), a .toml/.yaml/.json file, or module.py:NAME")
    launch.add_argument(
        "--hypermodel", metavar="MODULE.py:NAME",
        help="instead of --space: a KerasTuner build_model(hp) function or HyperModel in a Python file",
    )
    launch.add_argument("--max-epochs", type=int, help="epoch budget of a --hypermodel trial whose fit sets none, and the cap on any (default 20)")
    launch.add_argument("--data", help="digits, digits-images, wine, breast_cancer, diabetes, synthetic, a .npz or a .csv file, or a data loader module.py:NAME (see docs/data.md)")
    launch.add_argument("--target", help="target column of a CSV file")
    launch.add_argument(
        "--missing", choices=("impute", "refuse"),
        help="empty CSV cells: impute (training mean plus a missing indicator; text: a category of its own; default) or refuse",
    )
    launch.add_argument("--ignore", action="append", metavar="COLUMN", help="leave this CSV column out (repeatable), e.g. an id")
    launch.add_argument("--task", choices=("classification", "regression"), help="override the inferred task")
    launch.add_argument("--train-fraction", type=float, help="share of rows for training (default 0.6)")
    launch.add_argument("--trials", type=int, help="the study's total budget of finished trials (default 20)")
    launch.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    launch.add_argument(
        "--max-failures", type=int,
        help="stop the sweep after this many failed trials in a row (default 5); failures spend no budget",
    )
    launch.add_argument(
        "--allow-objective-change", action="store_true",
        help="resume a study with other objective settings (e.g. --gap-penalty); its earlier scores were computed the old way",
    )
    launch.add_argument(
        "--log-file", metavar="PATH",
        help="Optuna's per-trial log, with the traceback of each failed trial (default: beside a SQLite "
        "database, e.g. sweeps.log for sweeps.db; else gapsweep.log here)",
    )
    launch.add_argument(
        "--gap-penalty", type=float,
        help="λ in score = val + min(λ·gap, κ·SE), gap = max(0, val − train); 0 = plain val loss (default 1)",
    )
    launch.add_argument(
        "--score", choices=("bounded", "additive"),
        help="bounded (default): the gap penalty is capped at κ standard errors of the val loss and "
        "chance-level models rank last; additive: the older val + λ·gap, for comparison (docs/selection.md)",
    )
    launch.add_argument("--kappa", type=float, help="κ: the bounded penalty moves a score by at most κ·SE (default 0.5)")
    launch.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 5)")
    launch.add_argument(
        "--max-gap", type=float,
        help="gap constraint τ: trials with val − train > τ are infeasible and rank last (TPE's constraints)",
    )
    launch.add_argument(
        "--multi-objective", action="store_true", default=None,
        help="minimize (val loss, gap) together; best then returns the Pareto front. Optuna cannot prune "
        "multi-objective studies, so trials run with early stopping only (--pruner is ignored); the "
        "single gap-penalized score stays the pruned default",
    )
    launch.add_argument(
        "--cv", type=int,
        help="score each trial by k-fold cross-validation over the training and val rows together (k >= 2); "
        "the pruner sees the running mean after each fold",
    )
    launch.add_argument("--baseline", help="JSON file of your current parameter values: run first, compared in every summary")
    launch.add_argument(
        "--no-linear-start", dest="linear_start", action="store_false", default=None,
        help="do not queue the linear reference's configuration (depth 0) as a new study's first trial",
    )
    launch.add_argument("--pruner", choices=("median", "hyperband", "sha", "none"), help="per-epoch pruner (default median)")
    launch.add_argument("--sampler", choices=("tpe", "random"), help="Optuna sampler (default tpe)")
    launch.add_argument("--seed", type=int, help="seed for the sampler, the split and the weights (default 0)")
    launch.add_argument(
        "--jobs", type=int, metavar="N",
        help="trials trained at once: one in this process, the others in worker processes (default: $GAPSWEEP_JOBS, "
        "else one per GPU given with --gpu, else one per usable core); 1 trains in this process alone",
    )
    launch.add_argument(
        "--gpu", metavar="0,1,…",
        help="GPUs to train on, one job per GPU by default (each job pinned to one), or 'none' for the CPU",
    )
    _storage_flag(launch)
    launch.add_argument(
        "--artifacts", metavar="URL",
        help="where trained models and checkpoints live: database (default), a folder every worker mounts "
        "(file:///shared/gapsweep-artifacts) or s3://bucket/prefix (pip install 'gapsweep[s3]'); kept with the study",
    )
    launch.add_argument("--top", type=int, default=5, help="rows in the results table (default 5)")
    launch.add_argument("--json", action="store_true", help="print the result summary as JSON")
    launch.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    launch.add_argument(
        "--create-only", action="store_true",
        help="validate the settings and create (or update) the study without training; workers then run it",
    )
    launch.set_defaults(run=_cmd_launch)

    best = commands.add_parser(
        "best", help="the best trials of a study",
        description="The k best complete trials, ranked in the database (the first is Optuna's best trial), "
        "and beside them the noise-aware view: the trial of lowest val loss with its standard error, how many "
        "trials its val rows cannot tell apart from it (paired one-standard-error rule), and the one of those "
        "with the smallest gap.",
    )
    _study_flag(best)
    best.add_argument("--top", "-k", type=int, default=1, help="how many trials (default 1)")
    best.add_argument(
        "--rule", choices=("score", "paired"), default="score",
        help="score (default): rank by the stored score, as Optuna does; paired: return the paired rule's pick",
    )
    best.add_argument("--by", default="score", choices=("score", "val_loss", "gap", "train_loss"), help="ranking (default score)")
    best.add_argument(
        "--gap-penalty", type=float,
        help="re-rank from the stored curves with this λ instead of the study's (no training)",
    )
    best.add_argument(
        "--epoch", choices=("best", "last"),
        help="with re-ranking: score each trial at its best epoch for the new λ, or at its last epoch",
    )
    _param_flag(best)
    _storage_flag(best)
    _format_flags(best)
    best.set_defaults(run=_cmd_best)

    trials = commands.add_parser("trials", help="all trials of a study", description="Every trial with its state, score parts and parameters.")
    _study_flag(trials)
    trials.add_argument("--state", action="append", help="only trials in this state (repeatable): complete, pruned, fail, running, waiting")
    _param_flag(trials)
    _storage_flag(trials)
    _format_flags(trials)
    trials.set_defaults(run=_cmd_trials)

    studies = commands.add_parser("studies", help="studies in a database", description="Each study with its trial counts per state.")
    _storage_flag(studies)
    _format_flags(studies, csv=False)
    studies.set_defaults(run=_cmd_studies)

    show = commands.add_parser("show", help="one trial in full", description="One trial with its parameters, score parts and per-epoch curves.")
    show.add_argument("study_name", metavar="STUDY")
    show.add_argument("trial", metavar="TRIAL", type=int, help="trial number")
    _storage_flag(show)
    _format_flags(show, csv=False)
    show.set_defaults(run=_cmd_show)

    worker = commands.add_parser(
        "worker",
        help="continue a study from its stored configuration (one worker per GPU or core)",
        description="Run trials of an existing study until its global budget is reached. The study "
        "stores its space, data, objective and pruner, so the name and the database URL are all a "
        "worker needs. Stale trials of dead workers are failed and retried, resuming from their last "
        "checkpoint. SIGTERM/Ctrl-C finishes the current trial, then exits; a second one stops at once. "
        "Environment: GAPSWEEP_HEARTBEAT_S (heartbeat interval, default 10 s; a trial is stale after 3 "
        "intervals without one) and GAPSWEEP_CHECKPOINT_S (seconds of training between checkpoints, "
        "default 30; 0 checkpoints every epoch, inf never).",
    )
    _study_flag(worker)
    _storage_flag(worker)
    worker.add_argument("--gpu", help="GPU index to train on (e.g. 0), or 'none' for the CPU; set before TensorFlow starts")
    worker.add_argument(
        "--trials-per-process", type=int, default=25,
        help="after this many trials the worker replaces itself with a fresh process, keeping memory flat (default 25)",
    )
    worker.add_argument("--threads", type=int, default=1, help="TensorFlow threads per pool (default 1: one worker per core)")
    worker.add_argument("--log-file", metavar="PATH", help="Optuna's per-trial log (default as for launch)")
    # Set by launch --jobs for the workers it starts: the job's index, when to stop starting trials,
    # launch's process (the job stops when it dies), and whether to wait for launch's start line.
    worker.add_argument("--job", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--stop-at", type=float, help=argparse.SUPPRESS)
    worker.add_argument("--launch-pid", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--await-start", action="store_true", help=argparse.SUPPRESS)  # jobs.AWAIT_START
    _code_dir_flag(worker)
    worker.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    worker.set_defaults(run=_cmd_worker)

    reap = commands.add_parser(
        "reap", help="fail trials of dead workers and queue them again",
        description="Mark RUNNING trials whose heartbeat is older than the grace period as failed and "
        "queue their parameters again (Optuna does this only when a worker asks for a trial).",
    )
    _study_flag(reap)
    _storage_flag(reap)
    reap.add_argument("--json", action="store_true", help="print the result as JSON")
    reap.set_defaults(run=_cmd_reap)

    proxy = commands.add_parser(
        "proxy", help="serve a database to many workers through Optuna's gRPC storage proxy",
        description="Serve the database to workers started with --storage grpc://HOST:PORT, through Optuna's gRPC "
        "storage proxy: however many workers run, the database sees this process's few connections. The proxy admits "
        "new trials against each study's budget, records the workers' heartbeats and reaps stale trials. Its workers "
        "keep models and checkpoints in a store they all reach (launch with --artifacts file:///shared/folder or "
        "s3://bucket/prefix). Read results from the database itself. Ctrl-C stops it.",
    )
    _storage_flag(proxy)
    proxy.add_argument("--host", default="localhost", help="address to listen on (default localhost; 0.0.0.0: every interface)")
    proxy.add_argument("--port", type=int, default=13000, help="port to listen on (default 13000)")
    proxy.add_argument("--threads", type=int, default=16, help="requests served at once per process (default 16)")
    proxy.add_argument(
        "--processes", type=int, default=1,
        help="server processes on the port (default 1; one serves about 6 trials/s per core, each holds up to 5 connections)",
    )
    proxy.set_defaults(run=_cmd_proxy)

    delete = commands.add_parser(
        "delete", help="remove a study and everything gapsweep stored for it",
        description="Delete a study: its trials, curves and configuration (Optuna's delete_study) and gapsweep's "
        "stored models and checkpoints of it. Asks for confirmation unless --yes.",
    )
    delete.add_argument("study_name", metavar="STUDY")
    delete.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    _storage_flag(delete)
    delete.set_defaults(run=_cmd_delete)

    migrate = commands.add_parser(
        "migrate", help="copy studies (trials, config, models) into another database",
        description="Copy a study started on a laptop (e.g. SQLite) into a shared database (e.g. "
        "PostgreSQL): Optuna's copy_study plus gapsweep's stored models and checkpoints.",
    )
    migrate.add_argument("--from", dest="source", required=True, metavar="URL", help="database to copy from")
    migrate.add_argument("--to", dest="target", required=True, metavar="URL", help="database to copy into")
    migrate.add_argument("--study", action="append", help="study to copy (repeatable; default: all)")
    migrate.add_argument("--json", action="store_true", help="print what was copied as JSON")
    migrate.set_defaults(run=_cmd_migrate)

    verify = commands.add_parser(
        "verify", help="retrain the top trials with fresh seeds and check them on the test split",
        description="The overtuning check: retrain the top k trials with s fresh seeds, score them on the "
        "held-out test split, and flag when the best trial by validation is beaten on test beyond the "
        "seed noise (mean difference > 2 standard errors). Names the most robust trial (lowest mean + std).",
    )
    verify.add_argument("study_name", metavar="STUDY")
    verify.add_argument("--top", type=int, default=3, help="how many of the best trials (default 3)")
    verify.add_argument("--seeds", type=int, default=3, help="fresh seeds per trial (default 3)")
    _storage_flag(verify)
    _code_dir_flag(verify)
    verify.add_argument("--json", action="store_true", help="print the results as JSON")
    verify.set_defaults(run=_cmd_verify)

    rerun = commands.add_parser(
        "rerun", help="retrain one trial from its reproducibility record and compare",
        description="Retrain a complete trial with its recorded seed, parameters and data, and report "
        "whether its val loss matches the stored one within the tolerance (exit 3 when it does not).",
    )
    rerun.add_argument("study_name", metavar="STUDY")
    rerun.add_argument("trial", metavar="TRIAL", type=int, help="trial number")
    _storage_flag(rerun)
    _code_dir_flag(rerun)
    rerun.add_argument("--json", action="store_true", help="print the comparison as JSON")
    rerun.set_defaults(run=_cmd_rerun)

    export = commands.add_parser(
        "export", help="write the best trial's trained model (refit, or an ensemble) to a .keras file",
        description="Write the stored model of the study's best trial (or --trial N) to a .keras file. "
        "Models are kept for the top trials only (objective.keep_models, default 3). --refit trains the "
        "trial's configuration again on the train and val rows together for the epochs early stopping chose; "
        "--ensemble K writes one model that averages the K best trials' models. The test rows are never used. "
        "The model takes raw rows: the sweep's standardization, imputation and category encoding are Keras "
        "layers inside it, keras.models.load_model(path).predict(rows) needs no gapsweep, and "
        "gapsweep.model_info(path) gives its inputs and class names. An array model takes a float array; a CSV "
        "model a dict of columns by name.",
    )
    export.add_argument("study_name", metavar="STUDY")
    export.add_argument("--out", required=True, help="output path, e.g. model.keras")
    export.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    export.add_argument(
        "--refit", action="store_true",
        help="retrain on train + val rows with the trial's recorded seed, for its best epoch count (no early stopping)",
    )
    export.add_argument(
        "--ensemble", type=int, metavar="K",
        help="average the K best trials that kept a model (with --refit: the K best complete trials, each refit)",
    )
    _storage_flag(export)
    export.add_argument("--json", action="store_true", help="print what was exported as JSON")
    export.set_defaults(run=_cmd_export)

    predict = commands.add_parser(
        "predict", help="predict new raw rows with the best trial's model, into a CSV file",
        description="Read new rows as the training data was read (a CSV with the same columns; the target column "
        "may be absent; or, for array data, a .npz with an array 'x'), predict them with the study's best stored "
        "model (or --trial N, or --model FILE.keras) and write --out: for a classifier the predicted class name "
        "and p_<class> per class, for a regressor the predicted value, one row per input row.",
    )
    predict.add_argument("study_name", metavar="STUDY", nargs="?", help="study whose stored model predicts (or --model)")
    predict.add_argument("--data", required=True, help="the new rows: a .csv file (or a .npz with x for array data)")
    predict.add_argument("--out", required=True, help="the CSV file to write, e.g. predictions.csv")
    predict.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    predict.add_argument("--model", help="a .keras file written by gapsweep export, instead of a STUDY")
    _storage_flag(predict)
    predict.add_argument("--json", action="store_true", help="print what was written as JSON")
    predict.set_defaults(run=_cmd_predict)

    report = commands.add_parser(
        "report", help="an HTML report (or PNG plots) of a study",
        description="One self-contained HTML file: optimization history, learning curves of the best trials, "
        "val loss against gap with the Pareto front, parameter importances, and every trial with its diagnosis. "
        "--format png writes the plots alone into the folder --out.",
    )
    _study_flag(report)
    report.add_argument("--out", required=True, help="the HTML file to write, or with --format png the folder for the PNGs")
    report.add_argument("--top", "-k", type=int, default=5, help="trials whose learning curves are drawn (default 5)")
    report.add_argument("--format", choices=("html", "png"), default="html", help="html (default) or png")
    _storage_flag(report)
    report.set_defaults(run=_cmd_report)
    return parser


def _code_from_current_folder(config: SweepConfig) -> SweepConfig:
    """A flag names code (``--hypermodel``, ``--data module.py:NAME``), read from the current
    folder: that becomes the project folder, and the sweep file's own code references keep
    their files by full path (still refused if they lie outside it)."""
    from dataclasses import replace

    base = Path(config.code_dir or ".")

    def full(ref: str) -> str:
        file, _, name = ref.rpartition(":")
        return f"{(base / file).resolve()}:{name}"

    hypermodel = full(config.hypermodel) if isinstance(config.hypermodel, str) else config.hypermodel
    data = replace(config.data, source=full(str(config.data.source))) if config.data.loader else config.data
    return replace(config, hypermodel=hypermodel, data=data, code_dir=None)


def _stored_or_default(study: str | None, storage: str | None, *, chosen: bool) -> SweepConfig:
    """What a launch without a sweep file starts from: an existing study's stored configuration
    (so ``launch --study NAME --trials 40`` resumes it as it was launched; flags still override),
    or the defaults for a new study. ``chosen``: the flags name the data or what to search; if
    not, a new study beside others is most likely a mistyped name, which a note says."""
    from gapsweep.errors import StorageError, StudyNotFoundError
    from gapsweep.sweeps.run.config import SweepConfig, stored_sweep

    if study is None:
        return SweepConfig()
    try:
        return stored_sweep(study, storage)
    except StudyNotFoundError as exc:
        if not chosen and "(studies: none yet)" not in str(exc):
            print(
                f"gapsweep: note: {exc}; starting a new study '{study}' on the default data (digits) and space (mlp): "
                "fix --study or --storage to resume one of those, or give --data and --space to choose",
                file=sys.stderr,
            )
        return SweepConfig()
    except StorageError:
        return SweepConfig()  # launch names the trouble with the database


def _cmd_launch(args: argparse.Namespace) -> int:
    from gapsweep.errors import ConfigError
    from gapsweep.search_spaces.code_refs import is_ref
    from gapsweep.sweeps.run.config import SweepConfig, load_baseline, load_sweep_file
    from gapsweep.sweeps.data.datasets import DataSpec
    from dataclasses import replace

    checks.whole("--top", args.top, 1)  # the summary's rows: refused now, not after the sweep has trained
    chosen = args.data is not None or bool(args.space or args.hypermodel)
    config = load_sweep_file(args.sweep_file) if args.sweep_file else _stored_or_default(args.study, args.storage, chosen=chosen)
    data = config.data
    if args.data is not None:
        # Other data: the stored study's options and CSV columns belonged to its own data.
        same = args.data == data.source
        data = DataSpec(**{
            **data.to_dict(), "source": args.data, "options": data.options if same else {},
            "target": data.target if same else None, "ignore": data.ignore if same else (),
        })
    data_changes = {
        "target": args.target, "task": args.task, "train_fraction": args.train_fraction, "missing": args.missing,
        "ignore": tuple(args.ignore) if args.ignore else None,
    }
    data = replace(data, **{key: value for key, value in data_changes.items() if value is not None})
    objective = replace(
        config.objective,
        **{
            key: value
            for key, value in {
                "gap_penalty": args.gap_penalty, "score": args.score, "kappa": args.kappa,
                "patience": args.patience, "max_gap": args.max_gap, "cv": args.cv,
                "multi_objective": args.multi_objective,
            }.items()
            if value is not None
        },
    )
    if args.space and args.hypermodel:
        raise ConfigError("--space and --hypermodel both name what to search; give one of them")
    if args.space or args.hypermodel:
        config = replace(config, hypermodel=None)  # the flag overrides a sweep file's hypermodel
    if config.code_dir is not None and (args.hypermodel or (args.data is not None and is_ref(args.data))):
        config = _code_from_current_folder(config)
    config = config.override(
        study=args.study, space=args.space, trials=args.trials, timeout=args.timeout, pruner=args.pruner,
        sampler=args.sampler, seed=args.seed, storage=args.storage, data=data, objective=objective,
        baseline=load_baseline(args.baseline) if args.baseline else None,
        hypermodel=args.hypermodel, max_epochs=args.max_epochs, max_failures=args.max_failures,
        artifacts=args.artifacts, linear_start=args.linear_start,
    )
    if args.max_epochs is not None and config.hypermodel is None:
        raise ConfigError(
            "--max-epochs is the epoch budget of a --hypermodel; a search space sets its own "
            "(epochs = N, or an int range): drop --max-epochs or set epochs in the space"
        )
    import optuna

    from gapsweep.api import baseline_trial, best_trials, list_studies
    from gapsweep.output import to_json, trials_table
    from gapsweep.storage.url import proxy_address

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar and table say it all
    from gapsweep.sweeps.run.jobs import default_jobs, parse_gpus
    from gapsweep.sweeps.run.launch import graceful_stop, has_work, prepared, run_parallel, run_trials

    gpus = parse_gpus(args.gpu)
    jobs = checks.whole("--jobs", args.jobs, 1) if args.jobs is not None else default_jobs(gpus)
    if args.create_only:  # nothing trains: no job, no device
        jobs, gpus = 1, None
    progress = False if args.no_progress or args.json else None
    with prepared(
        config, jobs=jobs, gpus=gpus, allow_objective_change=args.allow_objective_change, log_file=args.log_file
    ) as (sweep, pool):
        if args.create_only:
            print(_ready_line(config, as_json=args.json))
            return 0
        if not args.json:
            print(_data_line(config, sweep.splits))
        if has_work(sweep) is None:
            print(
                f"gapsweep: study '{config.study}' has spent its budget of {config.trials} complete or pruned trial(s); "
                "nothing to run (pass a larger --trials to go on)", file=sys.stderr,
            )
        if pool is None:
            with graceful_stop(sweep):
                run_trials(sweep, progress=progress, log_file=args.log_file)
            interrupted = sweep.stop_requested
        else:
            interrupted = run_parallel(sweep, pool, progress=progress, log_file=args.log_file)
        proxied = proxy_address(config.storage) is not None
        if proxied:  # the results' queries need the database itself
            _print_proxied_summary(config.study, sweep.backend.state_counts(config.study), as_json=args.json)
    if proxied:
        return EXIT_INTERRUPTED if interrupted else 0
    top = best_trials(config.study, config.storage, args.top)
    counts = next(s.counts for s in list_studies(config.storage) if s.name == config.study)
    baseline = baseline_trial(config.study, config.storage)
    if args.json:
        # State names as `studies --json` writes them (lower case).
        summary = {"study": config.study, "counts": {state.lower(): n for state, n in counts.items()}, "best": _with_reference(config.study, config.storage, [t.summary() for t in top])}
        print(to_json({**summary, "baseline": baseline.summary() if baseline else None}))
    else:
        finished = ", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n)
        print(f"study '{config.study}': {finished or 'no trial yet'}")
        print(trials_table([t.summary() for t in top]) if top else "no complete trial yet")
        if baseline is not None:
            print(_against_baseline(baseline, top[0] if top else None))
        _print_reference_line(config.study, config.storage, [t.summary() for t in top])
    if interrupted:
        print(f"gapsweep: interrupted; launch study '{config.study}' again to go on", file=sys.stderr)
        return EXIT_INTERRUPTED
    spent = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
    if config.timeout is not None and spent < config.trials:
        print(
            f"gapsweep: the timeout ({config.timeout:g} s) ended this launch at {spent} of {config.trials} trials; "
            f"launch study '{config.study}' again to go on (the timeout counts anew each launch; --timeout sets it)",
            file=sys.stderr,
        )
    return 0


def _print_proxied_summary(study: str, counts: dict[str, int], *, as_json: bool) -> None:
    """A launch through a storage proxy: the study's counts, and where its results are read."""
    from gapsweep.output import to_json

    where = f"read its results from the database the proxy serves (gapsweep best --study {shlex.quote(study)} --storage DATABASE_URL)"
    if as_json:
        print(to_json({"study": study, "counts": {state.lower(): n for state, n in counts.items()}, "best": None, "note": where}))
        return
    finished = ", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n)
    print(f"study '{study}': {finished or 'no trial yet'}; {where}")


#: Fewer val rows than this make a val loss too noisy to rank trials by: launch says so.
_FEW_VAL_ROWS = 30


def _data_line(config: Any, splits: Any) -> str:
    """What the sweep learns, as gapsweep read the data: the task, the classes and the rows of
    each split; for a CSV target of whole numbers taken as classes, how to predict it as a number."""
    import re

    task, classes = splits.task.task, splits.preprocessing.classes
    what = f"regression, {splits.task.n_outputs} target(s)" if task == "regression" else f"classification, {len(classes)} classes"
    if classes:
        shown = [repr(name) for name in classes] if len(classes) <= 6 else [*map(repr, classes[:3]), "…", repr(classes[-1])]
        what += f" ({', '.join(shown)})"
    hint = ""
    if config.data.target and config.data.task is None and classes and all(re.fullmatch(r"-?\d+", name) for name in classes):
        hint = f"; column '{config.data.target}' holds whole numbers, taken as class labels: --task regression predicts them as numbers"
    rows = f"{len(splits.y_train)} train, {len(splits.y_val)} val, {len(splits.y_test)} test rows"
    if splits.preprocessing.target_mean is not None:
        hint += "; targets standardized: losses are in units of the training targets' variance, models predict in the target's units"
    if len(splits.y_val) < _FEW_VAL_ROWS and not config.objective.cv:
        hint += (
            f"; only {len(splits.y_val)} val rows: their val loss can hardly tell trials apart (see the ± of best), "
            "so add rows or cross-validate (--cv 5)"
        )
    return f"data: {what}; {rows}{hint}"


def _ready_line(config: Any, *, as_json: bool = False) -> str:
    """The worker command for a study made with ``--create-only``, ready to paste: the URL as
    the user would type it with its password left out (a worker reads it from PGPASSWORD or
    ~/.pgpass), and ``--code-dir`` where the study's code is relative to another folder. With
    ``as_json``, the study, the command and its note as one JSON object."""
    from sqlalchemy.engine import URL

    from gapsweep.search_spaces.code_refs import is_ref
    from gapsweep.storage.url import chosen, journal_path, parse, passwords, proxy_address

    if journal_path(config.storage) is not None or proxy_address(config.storage) is not None:
        storage, note = chosen(config.storage), ""  # a file path or a proxy's address: nothing secret in it
    else:
        url = parse(config.storage)
        note = "" if not passwords(url) else " (the password is left out: give the workers PGPASSWORD or a ~/.pgpass)"
        query = {key: value for key, value in url.query.items() if key.lower() != "password"}  # ?password= too
        url = URL.create(url.drivername.split("+")[0], url.username, None, url.host, url.port, url.database, query)
        storage = url.render_as_string(hide_password=False)
    flags = f"--study {shlex.quote(config.study)} --storage {shlex.quote(storage)}"
    if config.hypermodel is not None or is_ref(str(config.data.source)):
        folder = os.path.relpath(Path(config.code_dir or ".").resolve())
        flags += f" --code-dir {shlex.quote(folder)}" if folder != "." else ""
        note += " in a checkout of the project"
    if as_json:
        from gapsweep.output import to_json

        return to_json({"study": config.study, "ready": True, "worker_command": f"gapsweep worker {flags}", "note": note.strip(" ()")})
    return f"study '{config.study}' is ready: start workers with gapsweep worker {flags}{note}"


def _how_to_go_on(args: argparse.Namespace) -> str:
    """For a stopped worker: how its study goes on (a stopped launch says so itself)."""
    return f"; start a worker on study '{args.study}' again to go on" if args.command == "worker" else ""


def _against_baseline(baseline: Any, best: Any) -> str:
    """One line: the best trial's score against the user's own configuration."""
    if baseline.value is None:
        return f"baseline: trial {baseline.number} is {baseline.state.lower()}, with no score to compare"
    line = f"baseline: trial {baseline.number}, score {baseline.value:.4f} (gap {baseline.attrs.get('gap', float('nan')):.4f})"
    if best is None or best.value is None:
        return line
    change = (baseline.value - best.value) / abs(baseline.value) * 100 if baseline.value else 0.0
    return f"{line}; best: trial {best.number}, score {best.value:.4f}, {change:.1f}% lower"


def _cmd_best(args: argparse.Namespace) -> int:
    from gapsweep.api import baseline_trial, best_trial, best_trials, get_study_config, rerank_trials, select_trials
    from gapsweep.output import TRIAL_COLUMNS, to_json, trials_csv, trials_table, with_diagnosis

    columns = TRIAL_COLUMNS
    selection = None
    if args.gap_penalty is not None or args.epoch is not None:
        # Re-rank from the stored curves: the recomputed score parts, the stored score beside.
        if args.by != "score" or args.param or args.rule != "score":
            raise GapsweepError("re-ranking (--gap-penalty/--epoch) ranks by the recomputed score: drop --by, --param and --rule")
        penalty = args.gap_penalty
        if penalty is None:
            penalty = float(get_study_config(args.study, args.storage)["objective"]["gap_penalty"])
        ranked = rerank_trials(args.study, args.storage, args.top, gap_penalty=penalty, epoch=args.epoch or "best")
        rows = [with_diagnosis(item.record, item.summary()) for item in ranked]
        columns = ("number", "score", "stored_score", "val_loss", "train_loss", "gap", "best_epoch", "epochs_run")
        best = None
    elif args.rule == "paired":
        given = [flag for flag, used in (("--by", args.by != "score"), ("--param", bool(args.param))) if used]
        if given:
            raise GapsweepError(f"--rule paired picks one trial by the paired rule: drop {' and '.join(given)}")
        pick = best_trial(args.study, args.storage, rule="paired")
        selection = select_trials(args.study, args.storage)
        rows = [with_diagnosis(pick)] if pick is not None else []
        best = pick
    else:
        records = best_trials(args.study, args.storage, args.top, by=args.by, params=dict(args.param))
        rows = [with_diagnosis(record) for record in records]
        best = records[0] if records else None
        if records and args.by == "score" and not args.param:
            selection = select_trials(args.study, args.storage)
    if args.json:
        print(to_json({"trials": _with_reference(args.study, args.storage, rows), "selection": selection.to_dict() if selection is not None else None}))
    elif args.csv:
        sys.stdout.write(trials_csv(rows))
    else:
        if rows:
            print(trials_table(rows, columns))
        elif args.param:
            ranges = " ".join(f"--param {name}={'' if low is None else f'{low:g}'}:{'' if high is None else f'{high:g}'}"
                              for name, (low, high) in args.param)
            print(f"no complete trial of study '{args.study}' matches {ranges}")
        else:
            print(f"study '{args.study}' has no complete trial yet")
        if selection is not None:
            print(_selection_lines(selection))
        baseline = baseline_trial(args.study, args.storage)
        if baseline is not None:
            print(_against_baseline(baseline, best))
        # A --param filter or --by ranks a subset or by another measure: the first row is no verdict on the sweep.
        _print_reference_line(args.study, args.storage, rows, whole_sweep=not args.param and args.by == "score")
    return 0


def _with_reference(study: str, storage: str | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with the study's linear reference beside its val loss (``reference``), when the
    study has one."""
    from gapsweep.api import study_reference
    from gapsweep.storage import trial_keys
    from gapsweep.sweeps.run.reference import versus

    reference = study_reference(study, storage)
    if reference is None:
        return rows
    return [{**row, "reference": versus(reference, row.get("val_loss"), row.get(trial_keys.PRIOR_LOSS))} for row in rows]


def _print_reference_line(study: str, storage: str | None, rows: list[dict[str, Any]], *, whole_sweep: bool = True) -> None:
    """The first row's val loss beside the linear reference's, in one sentence (``whole_sweep``:
    the row is the sweep's best, so the sentence may say whether the sweep beat the reference),
    and one more if that row predicts no better than a constant."""
    from gapsweep.api import study_reference
    from gapsweep.storage import trial_keys
    from gapsweep.sweeps.run.reference import chance_sentence, sentence

    reference = study_reference(study, storage)
    pick = rows[0] if rows else {}
    if reference is not None:
        linear_start = bool(pick.get(trial_keys.LINEAR_START))
        print(sentence(
            reference, pick.get("number"), pick.get("val_loss"), linear_start=linear_start, whole_sweep=whole_sweep,
            prior_loss=pick.get(trial_keys.PRIOR_LOSS),
        ))
    if pick.get(trial_keys.CHANCE_LEVEL) and pick.get("val_loss") is not None:
        print(chance_sentence(pick["number"], pick["val_loss"], pick[trial_keys.PRIOR_LOSS], whole_sweep=whole_sweep))


def _selection_lines(selection: Any) -> str:
    """The noise-aware view under the table: val-min trial, its SE, the tie and the paired pick."""
    view = selection.to_dict()
    return (
        f"lowest val loss: trial {view['val_min_trial']}, {view['val_min_val_loss']:.4f} ± {view['se']:.4f} (SE, "
        f"{view['n_rows']} val rows); {view['n_tied'] - 1} other trial(s) tied with it by the paired 1-SE rule\n"
        f"paired pick (smallest gap among the tied): trial {view['paired_pick']}, val loss "
        f"{view['paired_pick_val_loss']:.4f}, gap {view['paired_pick_gap']:.4f}  (best --rule paired)"
    )


def _cmd_trials(args: argparse.Namespace) -> int:
    from gapsweep.api import list_trials
    from gapsweep.output import to_json, trials_csv, trials_table

    rows = [record.summary() for record in list_trials(args.study, args.storage, states=args.state, params=dict(args.param))]
    if args.json:
        print(to_json(rows))
    elif args.csv:
        sys.stdout.write(trials_csv(rows))
    else:
        print(trials_table(rows))
    return 0


def _cmd_studies(args: argparse.Namespace) -> int:
    from gapsweep.api import list_studies
    from gapsweep.output import studies_table, to_json

    studies = list_studies(args.storage)
    if not studies and not args.json:
        print("no studies in this database yet; launch a sweep there first")
        return 0
    print(to_json([study.to_dict() for study in studies]) if args.json else studies_table(studies))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from gapsweep.api import get_trial
    from gapsweep.output import plain, to_json, with_diagnosis

    record = get_trial(args.study_name, args.trial, args.storage)
    payload = with_diagnosis(record, record.to_dict())
    if args.json:
        (payload,) = _with_reference(args.study_name, args.storage, [payload])
        print(to_json(payload))
        return 0
    payload["diagnosis"] = "{label}: {reason}".format(**payload["diagnosis"])
    curves = payload.pop("curves")
    params = payload.pop("params")
    for key, value in payload.items():
        print(f"{key:>14}: {plain(value)}")
    for key, value in params.items():
        print(f"{'param.' + key:>14}: {value}")
    for name, values in curves.items():
        print(f"{'curve.' + name:>14}: " + " ".join(f"{v:.4f}" for v in values))
    _print_reference_line(args.study_name, args.storage, [record.summary()], whole_sweep=False)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from gapsweep.sweeps.run.config import stored_sweep
    from gapsweep.sweeps.run.jobs import await_start, die_with_launch, replacement_argv, select_device, use_device
    from gapsweep.sweeps.run.worker import work

    checks.whole("--threads", args.threads, 1)
    checks.whole("--trials-per-process", args.trials_per_process, 1)  # before the device line, not after it
    if args.launch_pid is not None:
        die_with_launch(args.launch_pid)
    if args.await_start:  # a job started while launch prepares the study: TensorFlow first, then wait
        device = use_device(args.gpu, args.threads)
        started, stop_at = await_start()
        if not started:
            return 0  # launch needs no more jobs, or it stopped
        args.stop_at = stop_at if stop_at is not None else args.stop_at
    else:
        select_device(args.gpu)
    config = stored_sweep(args.study, args.storage, args.code_dir)
    config.code()  # a hypermodel or data loader outside --code-dir is refused before TensorFlow starts
    config.data_code()  # so is data that only the launching script held
    if not args.await_start:
        device = use_device(args.gpu, args.threads)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its lines and the progress bar say it all, as in launch
    talk = args.job is None  # a job of launch --jobs leaves the talking to launch
    if talk:
        print(f"gapsweep worker {os.getpid()}: study '{args.study}', training on {device}", file=sys.stderr, flush=True)
    ran = work(
        config,
        trials_per_process=args.trials_per_process,
        progress=False if args.no_progress else None,
        argv=None if args.argv is None else replacement_argv(args.argv, args.stop_at),
        job=args.job,
        log_file=args.log_file,
        stop_at=args.stop_at,
    )
    if talk:
        print(f"gapsweep worker {os.getpid()}: ran {ran} trial(s) since it last replaced itself (--trials-per-process); study '{args.study}' needs no more work from it", file=sys.stderr)
    return 0


def _cmd_reap(args: argparse.Namespace) -> int:
    from gapsweep.api import reap_study
    from gapsweep.output import to_json

    reaped = reap_study(args.study, args.storage)
    print(to_json({"study": args.study, "reaped": reaped}) if args.json else f"study '{args.study}': {len(reaped)} stale trial(s) failed and queued again {reaped or ''}".rstrip())
    return 0


def _cmd_proxy(args: argparse.Namespace) -> int:
    from gapsweep import checks
    from gapsweep.storage.proxy import serve

    checks.whole("--port", args.port, 1)
    checks.whole("--threads", args.threads, 1)
    checks.whole("--processes", args.processes, 1)
    serve(args.storage, host=args.host, port=args.port, threads=args.threads, processes=args.processes)
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    from gapsweep.api import delete_study, list_studies
    from gapsweep.errors import ConfigError, StudyNotFoundError

    studies = list_studies(args.storage)
    summary = next((s for s in studies if s.name == args.study_name), None)
    if summary is None:
        known = ", ".join(sorted(s.name for s in studies)) or "none yet"
        raise StudyNotFoundError(f"no study named '{args.study_name}' in this database (studies: {known})")
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"deleting study '{args.study_name}' needs a confirmation: pass --yes")
        n_trials = sum(summary.counts.values())
        answer = input(f"delete study '{args.study_name}' with {n_trials} trial(s) and its stored models? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return EXIT_USER_ERROR
    removed = delete_study(args.study_name, args.storage)
    print(f"deleted study '{args.study_name}' and {removed} stored model(s)/checkpoint(s)")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    import optuna

    from gapsweep.api import migrate
    from gapsweep.output import to_json

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the lines below say what was copied
    copied = migrate(args.source, args.target, studies=args.study)
    if args.json:
        print(to_json(copied))
    else:
        for row in copied:
            print(f"copied study '{row['study']}': {row['trials']} trial(s), {row['artifacts']} stored model(s)/checkpoint(s)")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from gapsweep.output import table, to_json
    from gapsweep.sweeps.analysis.verify import verify

    checked, verdict = verify(args.study_name, args.storage, top=args.top, seeds=args.seeds, code_dir=args.code_dir)
    rows = [c.to_dict() for c in checked]
    if args.json:
        print(to_json({"trials": rows, **verdict.__dict__}))
        return 0
    columns = ["number", "rank_by_validation", "stored_val_loss", "val_loss_mean", "val_loss_std", "test_loss_mean", "test_loss_std"]
    if any("test_accuracy_mean" in row for row in rows):
        columns.append("test_accuracy_mean")
    print(table(rows, columns))
    print(("OVERTUNED: " if verdict.overtuned else "ok: ") + verdict.reason)
    print(f"most robust (lowest test mean + std): trial {verdict.most_robust}")
    return 0


def _cmd_rerun(args: argparse.Namespace) -> int:
    from gapsweep.output import to_json
    from gapsweep.sweeps.analysis.reproduce import rerun

    result = rerun(args.study_name, args.trial, args.storage, code_dir=args.code_dir)
    if args.json:
        print(to_json(result.to_dict()))
    else:
        verdict = "reproduced" if result.reproduced else "NOT reproduced"
        print(
            f"trial {args.trial} of '{args.study_name}': recorded val loss {result.recorded_val_loss:.6f}, "
            f"rerun {result.rerun_val_loss:.6f} (relative difference {result.relative_difference:.2e}): {verdict}"
        )
        if result.recorded_fingerprint != result.rerun_fingerprint:
            print(
                f"the data differs from the rows trial {args.trial} trained on (fingerprint {result.recorded_fingerprint}, "
                f"now {result.rerun_fingerprint}): restore the study's data to rerun it"
            )
        elif not result.reproduced and result.resumed_from_epoch is not None:
            print(
                f"trial {args.trial} was resumed from a checkpoint after epoch {result.resumed_from_epoch} (its worker "
                "died), so an uninterrupted rerun need not match it exactly"
            )
    return 0 if result.reproduced else EXIT_NOT_REPRODUCED


def _cmd_export(args: argparse.Namespace) -> int:
    from gapsweep.sweeps.analysis.export import export_best
    from gapsweep.output import to_json

    exported = export_best(
        args.study_name, args.out, args.storage, trial=args.trial, refit=args.refit, ensemble=args.ensemble
    )
    if args.json:
        print(to_json(exported.to_dict()))
        return 0
    meta = exported.meta
    if len(exported.trials) > 1:
        what = f"an ensemble of trials {', '.join(map(str, exported.trials))}"
        if "val_loss" in meta:
            what += f" (val loss {meta['val_loss']:.4f}; the members' mean {meta['members_mean_val_loss']:.4f})"
    else:
        score = meta.get("score")
        what = f"trial {exported.trial_number}" + (f" (score {score:.4f})" if score is not None else "")
    if exported.refit:
        epochs = meta["refit_epochs"]
        epochs_text = ", ".join(map(str, epochs)) if isinstance(epochs, list) else str(epochs)
        what += f", refit on {meta['refit_rows']} train + val rows for {epochs_text} epoch{'' if epochs in (1, [1]) else 's'},"
    print(f"wrote {what} of '{args.study_name}' to {args.out}")
    if exported.note:
        print(f"note: {exported.note}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from gapsweep.output import to_json
    from gapsweep.sweeps.analysis.predict import predict_file

    written = predict_file(args.study_name, args.data, args.out, args.storage, trial=args.trial, model=args.model)
    if args.json:
        print(to_json(written.to_dict()))
    else:
        source = args.model if written.trial is None else f"trial {written.trial} of '{args.study_name}'"
        print(f"wrote {written.rows} predictions of {source} to {written.out} ({', '.join(written.columns)})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from gapsweep.sweeps.analysis.report import build_report, check_destination, write_html, write_pngs

    check_destination(Path(args.out), args.format)
    report = build_report(args.study, args.storage, top=args.top)
    if args.format == "png":
        for path in write_pngs(report, Path(args.out)):
            print(f"wrote {path}")
        for section in report.sections:
            if section.note:
                print(f"no {section.name}.png: {section.note}")
    else:
        print(f"wrote {write_html(report, Path(args.out))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    # Only a real command line may be re-executed by a worker; an in-process call never is.
    args.argv = sys.argv[1:] if argv is None else None
    try:
        return int(args.run(args))
    except GapsweepError as exc:
        print(f"gapsweep: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if getattr(args, "job", None) is None:  # a job of `launch --jobs`: launch says it once for all
            print(f"gapsweep: interrupted{_how_to_go_on(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`gapsweep best --json | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
