"""Key watch: committed writes, filtered on the node, streamed over ``GET /v1/watch``.

``watch_filter`` decides which keys a watch sees, ``subscriber`` holds one watch's bounded
buffer of live events, ``watch_hub`` fans applied entries out to subscribers in LSN order,
and ``watch_stream`` is the WebSocket session (history from the WAL, then live).
"""
