"""Launch a sweep from a script: the Python API that ``gapsweep launch`` wraps.

    python scripts/launch_sweep.py --study my-digits --trials 10
"""

from __future__ import annotations

import argparse

from gapsweep import DataSpec, GapsweepError, ObjectiveSettings, SweepConfig, best_trials, launch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="scripted-digits", help="the study's name (default scripted-digits)")
    parser.add_argument("--trials", type=int, default=10, help="the trial budget (default 10)")
    parser.add_argument("--storage", default=None, help="database URL (default sqlite:///gapsweep.db)")
    args = parser.parse_args()
    try:
        config = SweepConfig(
            study=args.study,
            space="mlp",
            data=DataSpec(source="digits", train_fraction=0.3),
            objective=ObjectiveSettings(gap_penalty=1.0),
            trials=args.trials,
            storage=args.storage,
        )
        launch(config)
        best = best_trials(args.study, args.storage, k=1)[0]
    except GapsweepError as exc:  # a user's mistake (a bad value, an unreachable database): one line, no traceback
        raise SystemExit(f"{parser.prog}: {exc}") from None
    print(best.summary())


if __name__ == "__main__":
    main()
