"""How many epochs should a refit on train + val rows train? A measurement, not a benchmark.

For each task and seed: a 6-trial sweep (plain val loss, no pruning), then the best trial is
refit on train + val rows three ways: the epochs early stopping chose (``best_epoch`` + 1), that
count divided by the growth in rows (the same number of optimizer steps), and multiplied by it.
Each model's test loss is printed beside the stored model's (trained on the train rows alone).

    .venv/bin/python -m benchmarks.refit_epochs --seeds 0 1 2 3 4 5 6 --out /tmp/refit_epochs.json

Results of the recorded run: docs/benchmarks/refit_epochs.json, summarized in docs/export.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile

from gapsweep.api import best_trials
from gapsweep.sweeps.analysis.export import load_best_model
from gapsweep.sweeps.analysis.reproduce import refit
from gapsweep.sweeps.data import losses
from gapsweep.sweeps.data.datasets import DataSpec, load
from gapsweep.sweeps.data.preprocessing import unwrap
from gapsweep.sweeps.run.config import SweepConfig, stored_sweep
from gapsweep.sweeps.run.launch import launch
from gapsweep.sweeps.trial.objective import ObjectiveSettings

SPACE = {
    "l2": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.4},
    "units": {"type": "int", "low": 16, "high": 128, "log": True},
    "n_layers": {"type": "int", "low": 1, "high": 2},
    "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "epochs": 40,
    "batch_size": 32,
}
TASKS = {
    "digits": DataSpec("digits", train_fraction=0.2, val_fraction=0.2, test_fraction=0.6),
    "wine": DataSpec("wine", train_fraction=0.4, val_fraction=0.3, test_fraction=0.3),
    "breast_cancer": DataSpec("breast_cancer", train_fraction=0.3, val_fraction=0.2, test_fraction=0.5),
    "diabetes": DataSpec("diabetes", train_fraction=0.4, val_fraction=0.3, test_fraction=0.3),
}
VARIANTS = ("same_epochs", "same_steps", "scaled_up")


def measure(seeds: list[int], url: str) -> list[dict]:
    rows = []
    for seed in seeds:
        for name, spec in TASKS.items():
            spec = DataSpec(**{**spec.to_dict(), "seed": seed})
            study = f"{name}-{seed}"
            objective = ObjectiveSettings(keep_models=1, patience=5, gap_penalty=0.0)
            launch(SweepConfig(study=study, space=SPACE, data=spec, trials=6, storage=url, pruner="none", seed=seed,
                               objective=objective), progress=False)
            config, splits = stored_sweep(study, url), load(spec)
            best = best_trials(study, url, 1)[0]
            growth = (len(splits.x_train) + len(splits.x_val)) / len(splits.x_train)
            epochs = best.attrs["best_epoch"] + 1

            def test_loss(model) -> float:
                predictions = model.predict(splits.x_test, verbose=0)
                return float(losses.per_example(splits.task, splits.y_test, predictions).mean())

            row = {"task": name, "seed": seed, "best_epoch+1": epochs, "growth": round(growth, 2),
                   "no_refit": test_loss(unwrap(load_best_model(study, url)))}  # the trained part: x_test is preprocessed
            counts = {"same_epochs": epochs, "same_steps": max(1, round(epochs / growth)), "scaled_up": round(epochs * growth)}
            for variant, count in counts.items():
                seed_of_trial = int(best.attrs["repro"]["seed"])
                row[variant] = test_loss(refit(config, best.summary()["params"], seed_of_trial, splits, epochs=count))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def summarize(rows: list[dict]) -> None:
    """Mean relative test-loss change, paired on the same task and seed, with a 95 % interval."""
    for base, variants in (("no_refit", VARIANTS), ("same_epochs", VARIANTS[1:])):
        for variant in variants:
            changes = [(row[variant] - row[base]) / row[base] for row in rows]
            half = 1.96 * statistics.stdev(changes) / math.sqrt(len(changes))
            lower = sum(change < 0 for change in changes)
            print(f"{variant} vs {base}: {statistics.fmean(changes):+.3f} ± {half:.3f}, lower in {lower}/{len(changes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5, 6])
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = measure(args.seeds, f"sqlite:///{folder}/refit.db")
    summarize(rows)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
