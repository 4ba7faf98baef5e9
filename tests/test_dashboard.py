"""optuna-dashboard opens a gapsweep database as it is: the claim the README makes, checked.

The dashboard's WSGI app is called in-process with a hand-built environ, so no server or port.
"""

from __future__ import annotations

import io
import json
import wsgiref.util
from pathlib import Path
from typing import Any

import optuna
import optuna_dashboard

from fake_trials import add_mixed_trials
from gapsweep.storage.engine import open_storage
from gapsweep.storage.studies import CONFIG_ATTR


def _get(app: Any, path: str) -> tuple[str, Any]:
    environ: dict[str, Any] = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD="GET", PATH_INFO=path, QUERY_STRING="", **{"wsgi.input": io.BytesIO()})
    status: list[str] = []
    body = b"".join(app(environ, lambda code, headers, exc_info=None: status.append(code)))
    return status[0], json.loads(body)


def test_dashboard_lists_a_gapsweep_study_and_its_trials(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'gapsweep.db'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="digits-demo", storage=storage)
    study.set_user_attr(CONFIG_ATTR, {"study": "digits-demo", "space": "mlp", "pruner": "median", "trials": 6})
    add_mixed_trials(study)
    storage.engine.dispose()

    app = optuna_dashboard.wsgi(url)
    status, studies = _get(app, "/api/studies")
    assert status.startswith("200")
    [summary] = studies["study_summaries"]
    assert summary["study_name"] == "digits-demo" and summary["directions"] == ["minimize"]

    status, detail = _get(app, f"/api/studies/{summary['study_id']}")
    assert status.startswith("200")
    assert detail["name"] == "digits-demo"
    trials = {trial["number"]: trial for trial in detail["trials"]}
    assert sorted(trials) == [0, 1, 2, 3, 4, 5]
    assert [trials[n]["state"] for n in range(6)] == ["Complete"] * 4 + ["Pruned", "Fail"]
    assert {p["name"] for p in trials[0]["params"]} == {"l2", "dropout", "units"}
    attrs = {a["key"] for a in trials[0]["user_attrs"]}
    assert {"score", "gap", "best_epoch", "curve.train_loss", "curve.val_loss"} <= attrs
    assert [t["number"] for t in detail["best_trials"]] == [0]
    assert any(a["key"] == CONFIG_ATTR for a in detail["user_attrs"])
