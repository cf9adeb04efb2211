"""The one data directory of a Menshen installation: keys, client secrets, audit trail, models, engine logs."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """``$GATEWAY_DATA_DIR``, else ``$XDG_CACHE_HOME/menshen``, else ``~/.cache/menshen``."""
    if env := os.environ.get("GATEWAY_DATA_DIR"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "menshen"


__all__ = ["data_dir"]
