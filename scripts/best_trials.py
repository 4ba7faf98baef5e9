"""Print a study's best trials as JSON from a script: ``python scripts/best_trials.py STUDY``."""

from __future__ import annotations

import argparse
import json

from gapsweep import best_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--by", default="score", choices=("score", "val_loss", "gap", "train_loss"))
    parser.add_argument("--storage", default=None)
    args = parser.parse_args()
    rows = [trial.summary() for trial in best_trials(args.study, args.storage, args.top, by=args.by)]
    print(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
