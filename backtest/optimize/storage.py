"""Where a study lives: names, the fingerprint that makes trials comparable, the RDB storage
(SQLite file or a shared server) and writing finished trials to it."""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

from bot.config import Config, config_to_dict
from bot.errors import ConfigError, GridbotError

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
    """Add finished trials (FrozenTrials from a worker's in-memory study) to the RDB study in
    one transaction: the storage numbers them in this order. One commit per batch instead of
    Optuna's ~20 per trial, which were most of a short trial's time. Falls back to Optuna's
    public one-trial-per-commit call if its internals change."""
    if not trials:
        return
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(rdb.scoped_session) as session:
            models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            for t in trials:
                rdb._get_prepared_new_trial(study_id, t, session)
                session.flush()  # numbers count the trials before: each must be in
    except (ImportError, AttributeError):
        for t in trials:
            rdb.create_new_trial(study_id, template_trial=t)


def open_study(rdb: Any, name: str, url: str, directions: list[str], fingerprint: str) -> Any:
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
