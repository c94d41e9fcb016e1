"""The Docker fixtures of the platform tests (the engine, a broker name cleaned up after
itself), for the reliability tests that run a docker broker."""

from tests.platforms.conftest import broker_name, engine

__all__ = ["broker_name", "engine"]
