"""The dashboard served by every coordinator at ``GET /ui`` (docs/dashboard.md).

Static files shipped in the package (``static/``: one HTML page, one script, one style sheet;
no build step, nothing fetched from elsewhere), and the data calls behind them: the event
feed (``/v1/events``, coordinator/events_api.py), the key browser (keys_api.py) and the live
watch of a prefix (watch_proxy.py), each behind the dashboard credential when the cluster is
secured (coordinator/dashboard_auth.py).
"""

from __future__ import annotations

from aiohttp import web
from shardkv.coordinator.dashboard import keys_api, static_files, watch_proxy


def add_routes(app: web.Application) -> None:
    app.router.add_routes(static_files.routes() + keys_api.routes() + watch_proxy.routes())
