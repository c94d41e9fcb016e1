"""The dialects' docker tests use the Docker backends' engine fixture."""

from tests.platforms.conftest import engine as engine
