"""Workers that end with their run, and trials a dead run left RUNNING.

Today's workers write nothing to the storage (the main process writes finished trials only),
so a killed run leaves no RUNNING trial; studies run by earlier versions (each worker a trial
writer, owner recorded per trial) may hold some, and :func:`fail_orphaned_trials` fails them."""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

_OWNER_ATTR = "gridbot_owner"
_PR_SET_PDEATHSIG = 1


_WORKER_ATTR = "gridbot_worker"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def die_with_parent(
    parent_pid: int, grace_seconds: float = 10.0, poll_seconds: float = 0.5
) -> None:
    """Make this worker end when the process that spawned it dies, even by kill -9.

    On Linux, PR_SET_PDEATHSIG has the kernel send SIGKILL the moment the parent dies: the worker
    ends at once, wherever it is (also deep in the numba engine); the trial it was running stays
    RUNNING and the next run on the study marks it FAIL (:func:`fail_orphaned_trials`).
    Elsewhere, a watchdog thread polls the parent's pid: the worker takes no new ticket, and
    ends after ``grace_seconds`` at most."""
    import signal
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        time.sleep(grace_seconds)  # the trial in hand may finish; the main loop takes no new one
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    if os.getppid() != parent_pid:  # died before the prctl above took effect
        os._exit(1)


def fail_orphaned_trials(study: Any) -> list[int]:
    """Mark FAIL the trials left RUNNING by a run that is gone (its worker's process no longer
    exists on this host); returns their numbers. Trials of live processes and of other hosts
    (a shared PostgreSQL study) are left alone."""
    import optuna

    host = socket.gethostname()
    prefix = f"{_WORKER_ATTR}:{host}:"
    workers = [int(k[len(prefix) :]) for k in study.user_attrs if k.startswith(prefix)]
    any_worker_alive = any(_pid_alive(pid) for pid in workers)
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get(_OWNER_ATTR)
        if not isinstance(owner, dict):
            # no owner recorded yet: orphaned when none of this host's workers is alive (and
            # some were: a study that never had one of ours is not ours to judge)
            dead = bool(workers) and not any_worker_alive
        elif owner.get("host") != host:
            continue
        else:
            pid = owner.get("pid")
            dead = isinstance(pid, int) and not _pid_alive(pid)
        if dead:
            try:
                study._storage.set_trial_user_attr(
                    t._trial_id, "error", "its run ended without finishing it (process died)"
                )
                study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
                failed.append(t.number)
            except Exception:  # another process failed or finished it at the same moment
                continue
    return failed
