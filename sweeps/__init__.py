"""How a sweep runs, one sub-package per idea, each importing only those below it:

- ``analysis``: judging finished trials (diagnosis, rerank, verify, reproduce, export, report);
- ``run``: running a study (its configuration, launch, workers);
- ``trial``: running one trial (objective, trainer, score, pruning, checkpoints, kept models);
- ``data``: the data a trial sees (sources, splits, folds).
"""
