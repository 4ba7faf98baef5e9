"""Questions about finished sweeps, answered with SQL over Optuna's tables.

These never load a whole study: "best k" is an ``ORDER BY … LIMIT k`` in the database, and the
params and attributes of just those k trials are fetched afterwards. Nothing here imports
TensorFlow, so the commands that use it start fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, NamedTuple, Sequence

import sqlalchemy as sa
from optuna.distributions import CategoricalDistribution, json_to_distribution
from optuna.trial import TrialState
from sqlalchemy.engine import Connection, Engine

from gapsweep.storage import trial_keys
from gapsweep.errors import ConfigError, StudyNotFoundError
from gapsweep.storage import optuna_tables as tables
from gapsweep.storage.pareto import pareto_front

_studies = tables.studies
_trials = tables.trials
_values = tables.trial_values
_params = tables.trial_params
_attrs = tables.trial_user_attrs
_heartbeats = tables.trial_heartbeats
_reported = tables.trial_intermediate_values

#: A filter on a numeric parameter: inclusive bounds, either may be open (None).
ParamRange = tuple[float | None, float | None]

#: Orderings ``best`` accepts: the objective itself, or a recorded score component.
RANK_BY = (trial_keys.SCORE, trial_keys.VAL_LOSS, trial_keys.GAP, trial_keys.TRAIN_LOSS)


@dataclass(frozen=True)
class StudySummary:
    """Trial counts per state. ``STALE`` counts RUNNING trials whose worker stopped sending
    heartbeats (zombies): they are not in ``RUNNING``, which is live work only."""

    name: str
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.name, **{state.lower(): n for state, n in self.counts.items()}}


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the query layer returns it: params, score parts and curves."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    started: datetime | None = None
    completed: datetime | None = None
    #: The values the trial reported to the pruner, by step (epoch, or fold under ``--cv``): all
    #: there is of a running trial's progress, since its curves are written when it ends. Loaded
    #: for one trial (``get_trial``), not for listings.
    reported: tuple[float, ...] = ()

    @property
    def duration_s(self) -> float | None:
        if self.started is None or self.completed is None:
            return None
        return (self.completed - self.started).total_seconds()

    def summary(self) -> dict[str, Any]:
        """The trial without per-epoch curves: what tables and ``--json`` listings show."""
        scalars = {
            key: value for key, value in self.attrs.items()
            if not key.startswith((trial_keys.CURVE_PREFIX, trial_keys.FIXED_PREFIX))
        }
        return {
            "number": self.number,
            "state": self.state,
            "score": scalars.pop(trial_keys.SCORE, self.value),  # the objective value, unless multi-objective
            "val_loss": scalars.pop(trial_keys.VAL_LOSS, None),
            "train_loss": scalars.pop(trial_keys.TRAIN_LOSS, None),
            "gap": scalars.pop(trial_keys.GAP, None),
            "params": {**self.params, **trial_keys.fixed(self.attrs)},
            "duration_s": self.duration_s,
            **scalars,
        }

    def to_dict(self) -> dict[str, Any]:
        """The summary plus the per-epoch curves, and the scores reported to the pruner."""
        curves = trial_keys.curves(self.attrs)
        if self.reported:
            curves[REPORTED_CURVE] = list(self.reported)
        return {**self.summary(), "curves": curves}


#: The curve ``to_dict`` shows the reported scores under.
REPORTED_CURVE = "reported_score"


def study_id(engine: Engine, name: str) -> int:
    known = _known_ids.get(engine, {})
    if name in known:
        return known[name]
    with engine.connect() as conn:
        return _study_id(conn, name)


#: Study ids by name, per engine: an id never changes while its study exists, and the claim
#: loop and the model keeper ask for it after every trial.
_known_ids: weakref.WeakKeyDictionary[Engine, dict[str, int]] = weakref.WeakKeyDictionary()


def _study_id(conn: Connection, name: str) -> int:
    """The study's id, on a connection the caller goes on using (one round trip fewer)."""
    known = _known_ids.setdefault(conn.engine, {})
    if name in known:
        return known[name]
    found = conn.execute(sa.select(_studies.c.study_id).where(_studies.c.study_name == name)).scalar()
    if found is None:
        names = conn.execute(sa.select(_studies.c.study_name).order_by(_studies.c.study_name)).scalars().all()
        raise StudyNotFoundError(
            f"no study named '{name}' in this database (studies: {', '.join(names) or 'none yet'})"
        )
    known[name] = int(found)
    return known[name]


def state_counts(engine: Engine, study: str) -> dict[str, int]:
    """Trials of one study per state, counted in the database (no trial is loaded)."""
    counts = {state.name: 0 for state in TrialState}
    with engine.connect() as conn:
        query = (
            sa.select(_trials.c.state, sa.func.count(_trials.c.trial_id))
            .where(_trials.c.study_id == _study_id(conn, study))
            .group_by(_trials.c.state)
        )
        for state, n in conn.execute(query):
            counts[_state_name(state)] = int(n)
    return counts


def study_user_attrs(engine: Engine, study: str) -> dict[str, Any]:
    """The study's user attributes (gapsweep keeps its configuration there)."""
    sid = study_id(engine, study)
    table = tables.study_user_attrs
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.key, table.c.value_json).where(table.c.study_id == sid)).all()
    return {key: json.loads(value) for key, value in rows}


def n_objectives(engine: Engine, study: str) -> int:
    """1 for a study ranked by its score, 2 for a multi-objective (val loss, gap) study."""
    sid = study_id(engine, study)
    directions = tables.study_directions
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(directions.c.study_id == sid)).scalar() or 1)


def pareto_trials(engine: Engine, study: str) -> list[TrialRecord]:
    """The complete trials no other beats on both objectives, by the first objective.

    Only two floats per trial are read to find the front; the front's trials are loaded whole.
    """
    sid = study_id(engine, study)
    query = (
        sa.select(_trials.c.trial_id, _values.c.objective, _values.c.value)
        .join(_values, _values.c.trial_id == _trials.c.trial_id)
        .where(_trials.c.study_id == sid, _trials.c.state == TrialState.COMPLETE, _values.c.objective.in_((0, 1)))
    )
    points: dict[int, list[float]] = defaultdict(lambda: [math.nan, math.nan])
    with engine.connect() as conn:
        for trial_id, objective, value in conn.execute(query):
            points[trial_id][objective] = math.nan if value is None else float(value)
    ids = [i for i, p in points.items() if all(math.isfinite(v) for v in p)]
    front = [ids[i] for i in pareto_front([tuple(points[i]) for i in ids])]
    return _load(engine, sorted(front, key=lambda i: (points[i][0], points[i][1])))


def baseline_trial(engine: Engine, study: str) -> TrialRecord | None:
    """The trial that ran the user's baseline configuration (``--baseline``), if any."""
    sid = study_id(engine, study)
    query = (
        sa.select(_trials.c.trial_id)
        .join(_attrs, sa.and_(_attrs.c.trial_id == _trials.c.trial_id, _attrs.c.key == trial_keys.BASELINE))
        .where(_trials.c.study_id == sid, _attrs.c.value_json == "true")
        .order_by(_trials.c.number)
        .limit(1)
    )
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    return None if found is None else _load(engine, [found])[0]


def list_studies(engine: Engine, *, stale_after_s: float | None = None) -> list[StudySummary]:
    """Every study with its trial counts per state; with ``stale_after_s``, running trials
    without a heartbeat for that long are counted as ``STALE`` instead of ``RUNNING``."""
    query = (
        sa.select(_studies.c.study_name, _trials.c.state, sa.func.count(_trials.c.trial_id))
        .select_from(_studies.outerjoin(_trials, _trials.c.study_id == _studies.c.study_id))
        .group_by(_studies.c.study_name, _trials.c.state)
        .order_by(_studies.c.study_name)
    )
    counts: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for name, state, n in conn.execute(query):
            per_state = counts.setdefault(name, {**{s.name: 0 for s in TrialState}, "STALE": 0})
            if state is not None:
                per_state[_state_name(state)] += int(n)
        if stale_after_s is not None:
            for name in _stale_running(conn, stale_after_s):
                counts[name]["RUNNING"] -= 1
                counts[name]["STALE"] += 1
    return [StudySummary(name, per_state) for name, per_state in counts.items()]


def _stale_running(conn: Any, stale_after_s: float) -> list[str]:
    """Study names, once per RUNNING trial whose latest heartbeat (or, without one, its start)
    is older than the limit."""
    latest = (
        sa.select(_studies.c.study_name, sa.func.max(_heartbeats.c.heartbeat), _trials.c.datetime_start)
        .select_from(
            _trials.outerjoin(_heartbeats, _heartbeats.c.trial_id == _trials.c.trial_id).join(
                _studies, _studies.c.study_id == _trials.c.study_id
            )
        )
        .where(_trials.c.state == TrialState.RUNNING)
        .group_by(_trials.c.trial_id, _trials.c.datetime_start, _studies.c.study_name)
    )
    rows = conn.execute(latest).all()
    clock = _Clocks(conn)
    return [name for name, beat, start in rows if clock.silence(beat, start) > stale_after_s]


def backdate_silent_trials(engine: Engine, study: str, older_than_s: float) -> int:
    """Give each RUNNING trial of ``study`` that never sent a heartbeat one, dated at its start.

    A worker that dies or loses its connection between creating a trial and its first
    heartbeat leaves a RUNNING trial that Optuna's stale-trial check skips (it reads heartbeats
    only), and the study's other workers would wait on it for ever. Once such a trial is older
    than the grace period, this makes it stale the ordinary way, so Optuna fails it and its
    retry callback queues it again. Returns how many trials it dated.
    """
    silent = (
        sa.select(_trials.c.trial_id, _trials.c.datetime_start)
        .select_from(
            _trials.join(_studies, _studies.c.study_id == _trials.c.study_id).outerjoin(
                _heartbeats, _heartbeats.c.trial_id == _trials.c.trial_id
            )
        )
        .where(_studies.c.study_name == study, _trials.c.state == TrialState.RUNNING, _heartbeats.c.trial_id.is_(None))
    )
    try:
        with engine.begin() as conn:
            found = conn.execute(silent).all()
            if not found:
                return 0
            clock = _Clocks(conn)
            rows = [
                {"trial_id": trial_id, "heartbeat": clock.database_time_of(start)}
                for trial_id, start in found
                if clock.silence(None, start) > older_than_s
            ]
            if rows:
                conn.execute(sa.insert(_heartbeats), rows)
    except sa.exc.IntegrityError:
        return 0  # another worker dated them (or a heartbeat arrived) first
    return len(rows)


class _Clocks:
    """The two clocks a trial's times come from. Heartbeats are the database's clock (as
    Optuna's own staleness check reads them); a trial's start is the local time of the worker
    that created it (Optuna writes ``datetime.now()``), so each is compared with its own."""

    def __init__(self, conn: Any) -> None:
        self.database_now = conn.execute(sa.select(sa.func.now())).scalar().replace(tzinfo=None)
        self.local_now = datetime.now()

    def silence(self, beat: datetime | None, start: datetime) -> float:
        """Seconds since the last heartbeat, or since the start where there is none."""
        if beat is not None:
            return (self.database_now - beat).total_seconds()
        return (self.local_now - start).total_seconds()

    def database_time_of(self, start: datetime) -> datetime:
        """A local start time expressed on the database's clock."""
        return self.database_now - (self.local_now - start)


def _param_filters(conn: Connection, study: str, sid: int, ranges: dict[str, ParamRange] | None) -> list[Any]:
    """One EXISTS clause per ``--param`` range, evaluated in the database.

    Optuna stores a categorical parameter as the index of its choice, so a range over numeric
    choices becomes the indices of the choices inside it. A name the study never searched is a
    typo, not an empty result; a range over text choices is refused.
    """
    if not ranges:
        return []
    if not isinstance(ranges, dict) or not all(_is_range(bounds) for bounds in ranges.values()):
        raise ConfigError(f"params must map parameter names to (low, high) ranges, e.g. {{'l2': (1e-5, None)}}; got {ranges!r}")
    found = dict(
        conn.execute(
            sa.select(_params.c.param_name, sa.func.min(_params.c.distribution_json))
            .join(_trials, _trials.c.trial_id == _params.c.trial_id).where(_trials.c.study_id == sid)
            .group_by(_params.c.param_name)
        ).all()
    )
    unknown = sorted(set(ranges) - set(found))
    if found and unknown:
        # A value the space fixes shows in the tables as param.NAME, but it is a user attribute, the
        # same in every trial: say so, or the user looks for a typo that is not there.
        keys = list(trial_keys.fixed_attrs(dict.fromkeys(unknown)))
        fixed = trial_keys.fixed(dict.fromkeys(conn.execute(
            sa.select(_attrs.c.key).distinct().join(_trials, _trials.c.trial_id == _attrs.c.trial_id)
            .where(_trials.c.study_id == sid, _attrs.c.key.in_(keys))
        ).scalars()))
        verb = "is" if len(fixed) == 1 else "are"
        why = f" ({', '.join(sorted(fixed))} {verb} fixed by its space: every trial has the same value)" if fixed else ""
        raise ConfigError(
            f"study '{study}' has no searched parameter {', '.join(repr(name) for name in unknown)}{why}; "
            f"its parameters: {', '.join(sorted(found))}"
        )
    clauses = []
    for name, (low, high) in ranges.items():
        conditions = [_params.c.trial_id == _trials.c.trial_id, _params.c.param_name == name]
        distribution = json_to_distribution(found[name]) if name in found else None
        if isinstance(distribution, CategoricalDistribution):
            conditions.append(_params.c.param_value.in_(_choices_within(name, distribution.choices, low, high)))
        else:
            if low is not None:
                conditions.append(_params.c.param_value >= low)
            if high is not None:
                conditions.append(_params.c.param_value <= high)
        clauses.append(sa.exists().where(*conditions))
    return clauses


def _is_range(bounds: Any) -> bool:
    """Whether ``bounds`` is a ``(low, high)`` pair of numbers, either of them None for no bound."""
    return isinstance(bounds, (tuple, list)) and len(bounds) == 2 and all(
        bound is None or (isinstance(bound, (int, float)) and not isinstance(bound, bool)) for bound in bounds
    )


def _choices_within(name: str, choices: Sequence[Any], low: float | None, high: float | None) -> list[int]:
    """The indices (as Optuna stores them) of the numeric ``choices`` within ``[low, high]``."""
    if any(isinstance(choice, (str, bool)) or choice is None for choice in choices):
        raise ConfigError(
            f"--param {name}: a range needs numbers, but '{name}' is a choice among "
            f"{', '.join(map(str, choices))}; filter on a numeric parameter"
        )
    return [
        index for index, choice in enumerate(choices)
        if (low is None or choice >= low) and (high is None or choice <= high)
    ]


def best_trials(
    engine: Engine, study: str, k: int = 5, *, by: str = "score", params: dict[str, ParamRange] | None = None
) -> list[TrialRecord]:
    """The ``k`` complete trials with the lowest ``by`` (the score, or one of its parts),
    optionally among those whose numeric ``params`` lie in the given ranges."""
    return _load(engine, [trial_id for trial_id, _ in _ranking(engine, study, k, by, params)])


class Standing(NamedTuple):
    """Where a complete trial ranks: tuples sort exactly as ``best`` orders trials (those that
    break a ``--max-gap`` constraint after every feasible one, then by value, then by number)."""

    infeasible: bool
    value: float
    number: int


def best_values(engine: Engine, study: str, k: int) -> list[Standing]:
    """The standings of the ``k`` best complete trials by first objective value, without loading
    them: what the model keeper compares after every trial."""
    return [standing for _, standing in _ranking(engine, study, k, "score", None)]


def _ranking(
    engine: Engine, study: str, k: int, by: str, params: dict[str, ParamRange] | None
) -> list[tuple[int, Standing]]:
    """(trial id, standing by ``by``) of the ``k`` best complete trials, best first."""
    if by not in RANK_BY:
        raise ConfigError(f"cannot rank by '{by}'; use one of {', '.join(RANK_BY)}")
    # One connection for the whole ranking: the model keeper asks after every trial.
    with engine.connect() as conn:
        sid = _study_id(conn, study)
        filters = _param_filters(conn, study, sid, params)
        return [
            (int(trial_id), Standing(bool(flag), value, int(number)))
            for trial_id, number, value, flag in conn.execute(_ranking_query(sid, by, filters, k))
        ]


def _ranking_query(sid: int, by: str, filters: list[Any], k: int) -> sa.Select[Any]:
    """The ``k`` best complete trials of study ``sid`` by ``by``: trial id, number, value, infeasible flag."""
    complete = sa.and_(_trials.c.study_id == sid, _trials.c.state == TrialState.COMPLETE)
    if by == "score":
        key = _values.c.value
        query = (
            sa.select(_trials.c.trial_id, _trials.c.number, key)
            .join(_values, sa.and_(_values.c.trial_id == _trials.c.trial_id, _values.c.objective == 0))
            .where(complete, _values.c.value.is_not(None))
        )
    else:
        key = sa.cast(_attrs.c.value_json, sa.Float)
        query = (
            sa.select(_trials.c.trial_id, _trials.c.number, key)
            .join(_attrs, sa.and_(_attrs.c.trial_id == _trials.c.trial_id, _attrs.c.key == by))
            .where(complete)
        )
    # Trials that break a --max-gap constraint rank after every feasible one.
    flags = _attrs.alias("flags")
    infeasible = sa.case((sa.exists().where(
        flags.c.trial_id == _trials.c.trial_id, flags.c.key == trial_keys.FEASIBLE, flags.c.value_json == "false"
    ), 1), else_=0)
    query = query.add_columns(infeasible).where(*filters)
    return query.order_by(infeasible, key.asc(), _trials.c.number.asc()).limit(k)


def trial_numbers(engine: Engine, study: str, states: Sequence[str]) -> set[int]:
    """The numbers of ``study``'s trials in ``states``: one query, no attributes loaded."""
    with engine.connect() as conn:
        query = sa.select(_trials.c.number).where(
            _trials.c.study_id == _study_id(conn, study), _trials.c.state.in_([_parse_state(s) for s in states])
        )
        return {row[0] for row in conn.execute(query)}


def list_trials(
    engine: Engine, study: str, *, states: Sequence[str] | None = None, params: dict[str, ParamRange] | None = None
) -> list[TrialRecord]:
    """All trials of ``study`` in number order, optionally only those in ``states`` (a list of
    names, or one name) and ranges."""
    if isinstance(states, str):
        states = [states]
    if states is not None and not isinstance(states, (list, tuple, set)):
        raise ConfigError(f"states must be a state name or a list of them (e.g. ['complete', 'pruned']), got {states!r}")
    with engine.connect() as conn:
        sid = _study_id(conn, study)
        query = sa.select(_trials.c.trial_id).where(_trials.c.study_id == sid, *_param_filters(conn, study, sid, params))
        if states:
            query = query.where(_trials.c.state.in_([_parse_state(s) for s in states]))
        ids = [row[0] for row in conn.execute(query.order_by(_trials.c.number))]
    return _load(engine, ids)


def get_trial(engine: Engine, study: str, number: int) -> TrialRecord:
    sid = study_id(engine, study)
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(_trials.c.trial_id).where(_trials.c.study_id == sid, _trials.c.number == number)
        ).scalar()
        if found is None:
            raise StudyNotFoundError(f"study '{study}' has no trial number {number}")
        reported = conn.execute(
            sa.select(_reported.c.intermediate_value, _reported.c.intermediate_value_type)
            .where(_reported.c.trial_id == found).order_by(_reported.c.step)
        ).all()
    record = _load(engine, [found])[0]
    return dataclasses.replace(record, reported=tuple(tables.stored_intermediate_value(value, kind) for value, kind in reported))


def _load(engine: Engine, ids: Iterable[int]) -> list[TrialRecord]:
    """Trials by id, in the order given, with values, params and user attributes."""
    ids = list(ids)
    if not ids:
        return []
    params: dict[int, dict[str, Any]] = defaultdict(dict)
    attrs: dict[int, dict[str, Any]] = defaultdict(dict)
    values: dict[int, float | None] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                _trials.c.trial_id, _trials.c.number, _trials.c.state,
                _trials.c.datetime_start, _trials.c.datetime_complete,
            ).where(_trials.c.trial_id.in_(ids))
        ).all()
        for trial_id, value, value_type in conn.execute(
            sa.select(_values.c.trial_id, _values.c.value, _values.c.value_type)
            .where(_values.c.trial_id.in_(ids), _values.c.objective == 0)
        ):
            values[trial_id] = tables.stored_value(value, value_type)
        for trial_id, name, value, dist in conn.execute(
            sa.select(_params.c.trial_id, _params.c.param_name, _params.c.param_value, _params.c.distribution_json)
            .where(_params.c.trial_id.in_(ids))
        ):
            params[trial_id][name] = json_to_distribution(dist).to_external_repr(value)
        for trial_id, key, value_json in conn.execute(
            sa.select(_attrs.c.trial_id, _attrs.c.key, _attrs.c.value_json).where(_attrs.c.trial_id.in_(ids))
        ):
            attrs[trial_id][key] = json.loads(value_json)
    position = {trial_id: index for index, trial_id in enumerate(ids)}
    rows = sorted(rows, key=lambda row: position[row[0]])
    return [
        TrialRecord(
            number=number,
            state=_state_name(state),
            value=values.get(trial_id),
            params=params[trial_id],
            attrs=attrs[trial_id],
            started=start,
            completed=complete,
        )
        for trial_id, number, state, start, complete in rows
    ]


def _state_name(state: Any) -> str:
    return state.name if isinstance(state, TrialState) else str(state)


def _parse_state(text: str) -> TrialState:
    try:
        return TrialState[str(text).upper()]
    except KeyError:
        # `studies` counts stale trials apart, but in the database they are still running.
        stale = " (a stale trial is a running one whose worker went silent: --state running)" if str(text).lower() == "stale" else ""
        raise ConfigError(
            f"unknown trial state '{text}'; use one of {', '.join(s.name.lower() for s in TrialState)}{stale}"
        ) from None
