"""Test-only hooks (failpoints, the skewable clock's admin endpoint): inert unless
``SHARDKV_TEST_ADMIN`` is set."""
