"""Checkpoint cost in real training: the same seeded sweep checkpointing every epoch, every 30 s
(the default), and never.

A checkpoint serializes the model with its optimizer state and writes it to the database, so a
retried trial can resume. Each arm is the pruning benchmark's sweep (digits, train_fraction 0.3,
built-in ``mlp`` space, TPE, no pruner), with ``GAPSWEEP_CHECKPOINT_S`` set to 0, 30 or ``inf``;
the seed fixes the trials, so every arm trains the same epochs and only the time differs. Arms
alternate, each alone in a fresh process, so a burst of load hits them alike.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import harness, report
from benchmarks.pruning import sweep

NAME = "checkpoints"
TITLE = "Checkpoints: every epoch, every 30 s, never"
#: Arm name and the value of ``$GAPSWEEP_CHECKPOINT_S`` it runs with.
ARMS = {"every epoch": "0", "every 30 s (default)": "30", "never": "inf"}
DEFAULT, NEVER = "every 30 s (default)", "never"
#: The default's wall time may exceed the sweep without checkpoints by at most this much.
TARGET_EXCESS = 0.05


def timed_sweep(interval: str, seed: int, trials: int, space: str | dict[str, Any]) -> dict[str, Any]:
    os.environ["GAPSWEEP_CHECKPOINT_S"] = interval
    return sweep("none", seed, trials, space)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    names = [row["arm"] for row in rows]
    ax.barh(names, [row["wall_s"] for row in rows], color="tab:blue", alpha=0.7)
    for y, row in enumerate(rows):
        ax.plot(row["wall_s_runs"], [y] * len(row["wall_s_runs"]), "k.", markersize=5)
    ax.invert_yaxis()
    ax.set_xlabel("sweep wall time, s (bar: median; dots: runs)")
    ax.set_title(f"{rows[0]['trials']} digits trials, {rows[0]['epochs']} epochs: checkpoint interval", fontsize=10)
    report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    options = harness.parse_args(__doc__.splitlines()[0], argv)
    trials, repeats, space = (3, 1, harness.QUICK_SPACE) if options.quick else (20, 2, "mlp")
    started, machine = time.monotonic(), harness.machine()
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for _ in range(repeats):
        for arm, interval in ARMS.items():
            runs[arm].append(harness.in_fresh_process(timed_sweep, interval, 0, trials, space))
    never = statistics.median(r["wall_s"] for r in runs[NEVER])
    rows = []
    for arm, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        rows.append({
            "arm": arm, "env": ARMS[arm], "trials": trials, "epochs": results[0]["epochs"],
            "same_epochs": len({r["epochs"] for rs in runs.values() for r in rs}) == 1,
            "wall_s": wall, "wall_s_runs": [r["wall_s"] for r in results], "ratio_vs_never": wall / never,
        })
    table = report.markdown_table(rows, ["arm", "env", "trials", "epochs", "same_epochs", "wall_s", "ratio_vs_never"])
    print(table)

    plot(rows, report.plot_path(options.out, NAME))
    harness.finish(machine, started)
    excess = next(r["ratio_vs_never"] for r in rows if r["arm"] == DEFAULT) - 1
    met = excess <= TARGET_EXCESS
    report.write_json(options.out, NAME, {
        "benchmark": NAME, "quick": options.quick, "machine": machine,
        "settings": {"trials": trials, "repeats": repeats, "space": space, "seed": 0, "pruner": "none", "arms": ARMS},
        "rows": rows, "runs": runs,
        "target": {"default_excess_at_most": TARGET_EXCESS, "excess": excess, "met": met},
    })
    every_epoch = next(r["ratio_vs_never"] for r in rows if r["arm"] == "every epoch")
    body = "\n\n".join([
        f"`python -m benchmarks.checkpoints{' --quick' if options.quick else ''}`: the pruning benchmark's seed-0 sweep "
        f"({trials} trials, space `{space if isinstance(space, str) else 'quick'}`, no pruner) with "
        "`GAPSWEEP_CHECKPOINT_S` = 0, 30 and inf; median of "
        f"{repeats} alternating run(s), each alone in a fresh process on its own SQLite file.",
        report.machine_line(machine),
        table,
        f"![sweep wall time per checkpoint interval](benchmarks/{NAME}.png)",
        f"Checkpointing every epoch took {every_epoch:.2f}× the time of no checkpoints. Target: the default "
        f"(by time) at most {TARGET_EXCESS:.0%} slower than no checkpoints — {excess:+.1%} (**{'met' if met else 'missed'}**).",
    ])
    report.write_section(options.out, NAME, TITLE, body)


if __name__ == "__main__":
    main()
