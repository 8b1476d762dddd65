"""Structured logs: one JSON object per line on stderr.

Every process logs the same shape (``ts``, ``level``, ``component``, ``msg`` and any fields
passed through ``extra={"fields": {...}}``), so a person can read it and a log shipper can
parse it. ``SHARDKV_LOG_FORMAT=text`` switches to a plain human format.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(component: str, level: str | None = None) -> None:
    """Configure the root logger for one process (idempotent)."""
    level_name = (level or os.environ.get("SHARDKV_LOG_LEVEL", "info")).upper()
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("SHARDKV_LOG_FORMAT", "json") == "text":
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s")
        )
    else:
        handler.setFormatter(JsonFormatter(component))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level_name)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def log_fields(**fields: Any) -> dict[str, Any]:
    """``logger.info("msg", extra=log_fields(lsn=4))`` attaches structured fields."""
    return {"fields": fields}
