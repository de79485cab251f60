"""How ``doctor`` shows a Redis URL: every password replaced, the rest as written."""

from __future__ import annotations

import pytest

from proxygate.cli.doctor import _without_password


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@cache.internal:6380/2", "redis://:***@cache.internal:6380/2"),
        ("rediss://gateway:s3cret@cache.internal/0", "rediss://gateway:***@cache.internal/0"),
        ("unix:///run/redis.sock?db=1&password=s3cret", "unix:///run/redis.sock?db=1&password=***"),
    ],
)
def test_a_redis_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert _without_password(url) == shown
