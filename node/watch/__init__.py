"""Key watch: committed writes, filtered on the node, streamed over ``GET /v1/watch``.

``watch_filter`` decides which keys a watch sees, ``subscriber`` holds one watch's bounded
buffer of live events, ``watch_hub`` fans applied entries out to subscribers in LSN order
(each entry's events made once per group of equal watches), ``event_frames`` encodes them
once per wire format, ``live_sink`` writes a caught-up watch's frames from the hub, and
``watch_session`` is the WebSocket session (history from the WAL, then live).
"""
