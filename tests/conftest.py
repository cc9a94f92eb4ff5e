"""Shared pytest configuration: registers the service fixtures of tests/services.py."""

from tests.services import kafka_bootstrap, redis_url, s3_endpoint, stack, unique_topic  # noqa: F401
