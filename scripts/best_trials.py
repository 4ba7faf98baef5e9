"""Print a study's best trials as JSON from a script: ``python scripts/best_trials.py STUDY``."""

from __future__ import annotations

import argparse
import json

from gapsweep import GapsweepError, best_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="the study's name")
    parser.add_argument("--top", type=int, default=3, help="how many trials (default 3)")
    parser.add_argument(
        "--by", default="score", choices=("score", "val_loss", "gap", "train_loss"), help="rank by (default score)"
    )
    parser.add_argument("--storage", default=None, help="database URL (default sqlite:///gapsweep.db)")
    args = parser.parse_args()
    try:
        rows = [trial.summary() for trial in best_trials(args.study, args.storage, args.top, by=args.by)]
    except GapsweepError as exc:  # a user's mistake (unknown study, unreachable database): one line, no traceback
        raise SystemExit(f"{parser.prog}: {exc}") from None
    print(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
