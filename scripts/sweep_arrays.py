"""Sweep data a script already holds: N×H×W×C images as NumPy arrays, or a tf.data.Dataset.

    python scripts/sweep_arrays.py --study my-images --trials 10
    python scripts/sweep_arrays.py --study my-images-tf --trials 10 --tf-data

The arrays stay in this process, so it trains the trials itself, one at a time; for workers,
name a data loader instead (examples/loaders.py, examples/images_loader.toml).
"""

from __future__ import annotations

import argparse

from sklearn.datasets import load_digits

from gapsweep import DataSpec, SweepConfig, best_trials, launch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="scripted-images")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--space", default="cnn", help="a built-in space or a space file (default cnn)")
    parser.add_argument("--tf-data", action="store_true", help="hand the images over as a batched tf.data.Dataset")
    parser.add_argument("--storage", default=None, help="database URL (default sqlite:///gapsweep.db)")
    args = parser.parse_args()
    digits = load_digits()
    data = (digits.images[..., None], digits.target)  # 1797 × 8 × 8 × 1 images, class labels 0..9
    if args.tf_data:
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices(data).batch(64)
    config = SweepConfig(
        study=args.study, space=args.space, data=DataSpec(data, train_fraction=0.3), trials=args.trials,
        storage=args.storage,
    )
    launch(config)
    print(best_trials(args.study, args.storage, k=1)[0].summary())


if __name__ == "__main__":
    main()
