"""Where a study lives: names, the fingerprint that makes trials comparable, the RDB storage
(SQLite file or a shared server) and writing finished trials to it."""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import random
import re
import sqlite3
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from bot.config import Config, config_to_dict
from bot.errors import ConfigError, GridbotError

Direction = Literal["minimize", "maximize"]

__all__ = [
    "FINGERPRINT_ATTR",
    "config_fingerprint",
    "default_storage_url",
    "default_study_name",
    "mask_url",
    "open_storage",
    "open_study",
    "quiet_optuna",
    "write_trials",
]


def config_fingerprint(config: Config) -> str:
    """Hash of what makes trials comparable: bot, backtest (not results_dir), bounds,
    objectives and constraints. Run-time knobs (trials, workers, seed, storage) are left out."""
    d = config_to_dict(config)
    d["backtest"].pop("results_dir", None)
    opt = d["optimize"]
    part = {
        "bot": d["bot"],
        "backtest": d["backtest"],
        "bounds": opt["bounds"],
        "objectives": opt["objectives"],
        "constraints": opt["constraints"],
    }
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()


def default_study_name(config: Config, config_path: str | Path | None) -> str:
    stem = Path(config_path).stem if config_path else "config"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "config"
    return f"{stem}-{config_fingerprint(config)[:10]}"


def default_storage_url(results_dir: str | Path, study: str) -> str:
    path = (Path(results_dir) / "optimize" / f"{study}.db").resolve()
    return f"sqlite:///{path}"


def mask_url(url: str) -> str:
    """The storage URL with any password replaced by ``***`` (safe to print or store)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a SQLAlchemy URL: mask user:password@ by hand
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


def _sqlite_connect(path: str) -> sqlite3.Connection:
    """A SQLite connection for the study file. An Optuna trial makes ~20 small commits; with
    the default rollback journal each one syncs the disk (~6 ms here, most of a trial's time).
    WAL with synchronous=NORMAL syncs at checkpoints only and stays consistent on a crash
    (the last commits may be lost on power loss), and readers (the progress poll) never block
    the writers. Writers wait for the lock rather than fail with "database is locked"."""
    con = sqlite3.connect(path, timeout=120.0, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _with_available_driver(url: str) -> str:
    """``postgresql://`` means psycopg (3) in SQLAlchemy 2.1 and psycopg2 in 2.0: pick the
    driver that is installed, so either works with a plain URL."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://" + url[len("postgresql://") :]
    return url


def open_storage(url: str) -> Any:
    """An Optuna RDB storage. Several processes may create the schema of an empty database at
    once (two machines joining a fresh PostgreSQL study); the loser's error is retried."""
    import optuna
    import sqlalchemy.exc

    url = _with_available_driver(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        kwargs["engine_kwargs"] = {
            "creator": functools.partial(_sqlite_connect, url[len("sqlite:///") :])
        }
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    last: Exception | None = None
    for attempt in range(8):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            last = exc
            time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
    raise GridbotError(f"cannot open optimizer storage {mask_url(url)}: {last}") from None


def quiet_optuna(verbose: bool) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if not verbose:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


FINGERPRINT_ATTR = "gridbot_fingerprint"


def write_trials(rdb: Any, study_id: int, trials: list[Any]) -> None:
    """Add finished trials (FrozenTrials from the workers' in-memory studies) to the RDB study,
    numbered in this order, in one transaction.

    Optuna's own path (``create_new_trial`` with a template) flushes and queries per field and
    counts the study's trials per trial: ~25 ms a trial here, more than a short backtest, and
    growing with the study. This builds the same rows with Optuna's own table models and
    writes them at once (rows as Optuna writes them: the study reads back the same trials).
    Falls back to Optuna's public call if its internals move."""
    if not trials:
        return
    try:
        import sqlalchemy as sa
        from optuna.distributions import distribution_to_json
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        for t in trials:
            rdb.create_new_trial(study_id, template_trial=t)
        return
    with _create_scoped_session(rdb.scoped_session) as session:
        # Lock the study as Optuna does when it numbers a trial.
        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        trials_t = models.TrialModel.__table__
        count = sa.select(sa.func.count()).where(trials_t.c.study_id == study_id)
        base = session.scalar(count) or 0
        session.execute(
            sa.insert(trials_t),
            [
                {
                    "study_id": study_id,
                    "number": base + i,
                    "state": t.state,
                    "datetime_start": _naive_utc(t.datetime_start),
                    "datetime_complete": _naive_utc(t.datetime_complete),
                }
                for i, t in enumerate(trials)
            ],
        )
        got = sa.select(trials_t.c.number, trials_t.c.trial_id).where(
            trials_t.c.study_id == study_id, trials_t.c.number >= base
        )
        ids = {number: tid for number, tid in session.execute(got)}
        params, values, user, system = [], [], [], []
        for i, t in enumerate(trials):
            tid = ids[base + i]
            for k, v in t.params.items():
                d = t.distributions[k]
                params.append(
                    {
                        "trial_id": tid,
                        "param_name": k,
                        "param_value": d.to_internal_repr(v),
                        "distribution_json": distribution_to_json(d),
                    }
                )
            for j, v in enumerate(t.values or []):
                stored, kind = models.TrialValueModel.value_to_stored_repr(v)
                values.append(
                    {"trial_id": tid, "objective": j, "value": stored, "value_type": kind}
                )
            user += [
                {"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                for k, v in t.user_attrs.items()
            ]
            system += [
                {"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                for k, v in t.system_attrs.items()
            ]
        for model, rows in (
            (models.TrialParamModel, params),
            (models.TrialValueModel, values),
            (models.TrialUserAttributeModel, user),
            (models.TrialSystemAttributeModel, system),
        ):
            if rows:
                session.execute(sa.insert(model.__table__), rows)


def _naive_utc(t: datetime.datetime | None) -> datetime.datetime | None:
    """Optuna's RDB keeps naive UTC; a FrozenTrial carries naive local time."""
    return None if t is None else t.astimezone(datetime.UTC).replace(tzinfo=None)


def open_study(
    rdb: Any, name: str, url: str, directions: Sequence[Direction], fingerprint: str
) -> Any:
    """Create or load the study; a study with other directions or another fingerprint (its
    trials are not comparable with this config's) is a ConfigError."""
    import optuna

    where = f"study {name!r} in {mask_url(url)}"
    try:
        study = optuna.create_study(
            study_name=name, storage=rdb, directions=directions, load_if_exists=True
        )
    except ValueError as exc:  # e.g. directions differ from the stored study's
        raise ConfigError(f"{where}: {exc}") from None
    stored_dirs = [d.name.lower() for d in study.directions]
    if stored_dirs != directions:
        raise ConfigError(
            f"{where} has directions {stored_dirs}, the config {directions}; use another --study"
        )
    have = study.user_attrs.get(FINGERPRINT_ATTR)
    if have is None:
        try:
            study.set_user_attr(FINGERPRINT_ATTR, fingerprint)
        except Exception:  # another process set it at the same moment: compare with theirs
            have = optuna.load_study(study_name=name, storage=rdb).user_attrs.get(FINGERPRINT_ATTR)
    if have is not None and have != fingerprint:
        raise ConfigError(
            f"{where} was made with a different config (bot, backtest data/dates, bounds, "
            f"objectives or constraints differ), so its trials are not comparable with this "
            f"one's; use another --study"
        )
    return study
