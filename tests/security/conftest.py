"""The secured cluster fixture (``secure_cluster.py``) for every test in this folder."""

from secure_cluster import secure_cluster_fixture  # noqa: F401  (registers `secure_cluster`)
