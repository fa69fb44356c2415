"""Where numba keeps its compiled code: one folder per version of the compiled sources.

numba's own cache (``cache=True``, next to each source file) is keyed on the stamp of the file
that holds the function, not on the functions it calls. The engine's kernel inlines the whole
core, so after a change in ``bot/core/grid.py`` alone it would keep running the old grid from
its cache. Pointing ``NUMBA_CACHE_DIR`` at a folder named after a hash of every source numba
compiles (``bot/core`` and ``backtest``) makes any change start from a fresh cache. A
``NUMBA_CACHE_DIR`` set by the user is left alone. Must run before numba is imported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

_KEEP = 3  # cache folders kept per checkout (older versions of the sources are removed)


def _sources_hash(root: Path) -> str:
    h = hashlib.blake2b(digest_size=8)
    for folder in (root / "bot" / "core", root / "backtest"):
        for path in sorted(folder.glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def use_versioned_cache() -> None:
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    root = Path(__file__).resolve().parent.parent
    try:
        if (root / "pyproject.toml").exists():  # a checkout: next to the sources
            base = root / ".numba_cache"
        else:
            base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gridbot-numba"
        target = base / _sources_hash(root)
        target.mkdir(parents=True, exist_ok=True)
        os.utime(target)
        for old in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime)[:-_KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:
        return  # read-only install: numba's default cache
    os.environ["NUMBA_CACHE_DIR"] = str(target)
