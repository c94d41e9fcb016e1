"""A broker's configuration: one YAML file per broker (one per virtual platform).

Everything about a broker that differs between virtual platforms lives here: its name,
quota, standard sizes, prices, users and the platform(s) it fronts. Durations are
ISO-8601 strings, sizes are GiB. ``EXECBROKER_DATABASE_URL`` overrides ``database``
so one file can be tried against PostgreSQL without editing it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from execbroker.planner import OfferRules, Pricing, Quota, Resources, Unit
from execbroker.timeutil import parse_duration


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


class QuotaConfig(_Config):
    cores: int = Field(ge=1)
    memory: int = Field(ge=1, description="GiB")
    storage: int = Field(default=0, ge=0, description="GiB")
    max_sessions: int = Field(default=8, ge=1)
    max_duration: timedelta = timedelta(hours=2)
    horizon: timedelta = timedelta(days=7)

    _durations = field_validator("max_duration", "horizon", mode="before")(_duration)

    def to_quota(self) -> Quota:
        return Quota(
            resources=Resources(self.cores, self.memory, self.storage),
            max_sessions=self.max_sessions,
            max_duration=self.max_duration,
            horizon=self.horizon,
        )


class UnitConfig(_Config):
    name: str
    cores: int = Field(ge=1)
    memory: int = Field(ge=0)
    storage: int = Field(default=0, ge=0)
    multiples: tuple[int, ...] = (1, 2, 4)

    def to_unit(self) -> Unit:
        return Unit(self.name, Resources(self.cores, self.memory, self.storage), self.multiples)


class PricingConfig(_Config):
    type: str = "urn:execbroker:costs:credits"
    per_core_hour: float = Field(default=0.0, ge=0)
    per_memory_gib_hour: float = Field(default=0.0, ge=0)
    per_storage_gib_hour: float = Field(default=0.0, ge=0)

    def to_pricing(self) -> Pricing:
        return Pricing(self.per_core_hour, self.per_memory_gib_hour, self.per_storage_gib_hour)


class OffersConfig(_Config):
    max: int = Field(default=4, ge=1)
    ttl: timedelta = timedelta(minutes=5)

    _durations = field_validator("ttl", mode="before")(_duration)


class RangeDefault(_Config):
    min: int = Field(ge=0)
    max: int = Field(ge=0)


class DefaultsConfig(_Config):
    """What a request gets for a range it leaves open."""

    cores: RangeDefault = RangeDefault(min=1, max=1)
    memory: RangeDefault = RangeDefault(min=1, max=1)
    storage: RangeDefault = RangeDefault(min=0, max=0)
    duration: timedelta = timedelta(hours=1)

    _durations = field_validator("duration", mode="before")(_duration)


class UserConfig(_Config):
    """A user and their bearer token: its SHA-256 (``token_sha256``, as ``execbroker
    hash-token`` prints it), or the token itself (``token``, accepted with a warning)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    token: str | None = Field(default=None, min_length=8)
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    admin: bool = False

    @model_validator(mode="after")
    def _one_token(self) -> UserConfig:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError(f"users.{self.name}: give exactly one of token_sha256 and token")
        return self

    @property
    def token_digest(self) -> bytes:
        """What a presented token's SHA-256 is compared with."""
        if self.token_sha256 is not None:
            return bytes.fromhex(self.token_sha256)
        return token_digest(self.token or "")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class PlatformConfig(_Config):
    """Which backend, by name, and its own options (the backend validates those)."""

    model_config = ConfigDict(extra="allow")
    type: str


class MonitorConfig(_Config):
    interval: timedelta = timedelta(seconds=0.5)
    # How long a replica's claim on a session lasts without renewal (it renews every pass):
    # after a crash, another replica (or this one restarted) takes the session over then.
    # Default: 10 s, or three intervals if that is longer.
    lease: timedelta | None = None

    _durations = field_validator("interval", "lease", mode="before")(_duration)

    @model_validator(mode="after")
    def _lease_outlasts_passes(self) -> MonitorConfig:
        if self.interval <= timedelta(0):
            raise ValueError("monitor.interval: must be positive")
        if self.lease is not None and self.lease < 3 * self.interval:
            raise ValueError(
                "monitor.lease: must be at least three monitor intervals, or a replica that "
                "is merely slow loses its sessions to another"
            )
        return self

    @property
    def lease_length(self) -> timedelta:
        return self.lease or max(timedelta(seconds=10), 3 * self.interval)


class RetentionConfig(_Config):
    """How long what no longer holds anything is kept before it is purged (see
    ``execbroker.retention``): offer sets never accepted, and finished sessions with their
    work directories, logs and outputs. ``null`` keeps them for ever."""

    offers: timedelta | None = timedelta(days=1)
    sessions: timedelta | None = timedelta(days=30)

    _durations = field_validator("offers", "sessions", mode="before")(_duration)

    @model_validator(mode="after")
    def _positive(self) -> RetentionConfig:
        for name in ("offers", "sessions"):
            value = getattr(self, name)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"retention.{name}: must be positive (or null: keep for ever)")
        return self


USER = "{user}"  # in a file root: the broker user's name


@dataclass(frozen=True, slots=True)
class UserRoot:
    """One user's file root: ``base`` (the admin's path) and the components below it that
    the user may own (from ``{user}`` on), walked without following links."""

    base: Path
    below: tuple[str, ...] = ()
    shared: bool = False

    @property
    def path(self) -> PurePosixPath:
        return PurePosixPath(self.base, *self.below)


class FileRootConfig(_Config):
    """A directory TES ``file://`` URLs may name: per user (``{user}`` one whole component of
    the path), or, marked ``shared: true``, one all the broker's users read and overwrite."""

    path: str
    shared: bool = False

    @model_validator(mode="after")
    def _per_user_or_marked(self) -> FileRootConfig:
        path = PurePosixPath(self.path)
        if not path.is_absolute() or ".." in path.parts:
            raise ValueError(f"{self.path}: a file root is an absolute path without '..'")
        if USER in self.path:
            if path.parts.count(USER) != 1 or self.path.count(USER) != 1:
                raise ValueError(f"{self.path}: {USER} must be one whole component of the path")
            if self.shared:
                raise ValueError(f"{self.path}: a root with {USER} is per user, not shared")
        elif not self.shared:
            raise ValueError(
                f"{self.path}: every broker user could read and overwrite every other's files "
                f"here; make it per user ('{self.path.rstrip('/')}/{USER}') or mark it shared "
                f"({{path: {self.path}, shared: true}})"
            )
        return self

    def for_user(self, user: str) -> UserRoot | None:
        """The root as ``user``'s (None for a name that is no path component)."""
        if self.shared:
            return UserRoot(Path(self.path), shared=True)
        if user in (".", ".."):
            return None
        parts = PurePosixPath(self.path).parts
        at = parts.index(USER)
        return UserRoot(Path(*parts[:at]), (user, *parts[at + 1 :]))


class TesConfig(_Config):
    """The TES dialect: where ``file://`` inputs may be read and outputs written (nowhere
    unless listed: a task must not read or write the broker host's files by default), how
    long a create waits for the task to start, and how much of its outputs is delivered."""

    # A plain string is a per-user path (it must hold {user}); a shared root is marked.
    file_roots: list[FileRootConfig] = Field(default_factory=list)
    # A task's BASIC or FULL view answers once the platform has the task (started, queued
    # on it, or failed to start), or after this long: its logs are then a started task's.
    start_wait: timedelta = timedelta(seconds=10)
    # What the broker delivers of one task's outputs, all files together.
    max_output_bytes: int = Field(default=256 * 1024**2, ge=0)

    _durations = field_validator("start_wait", mode="before")(_duration)

    @field_validator("file_roots", mode="before")
    @classmethod
    def _plain_paths(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"path": str(item)} if isinstance(item, str | Path) else item for item in value]
        return value

    def roots_for(self, user: str) -> list[UserRoot]:
        """The directories ``user``'s file:// URLs may name: their own, and the shared ones."""
        found = [root.for_user(user) for root in self.file_roots]
        return [root for root in found if root is not None]

    def warnings(self) -> list[str]:
        """What to log at start-up: each shared root, the loosening it is."""
        return [
            f"tes.file_roots: {root.path} is shared: every user's TES tasks may read and "
            "overwrite every other user's files there"
            for root in self.file_roots
            if root.shared
        ]


class LoggingConfig(_Config):
    """How the broker writes its log: text lines, or one JSON object a line."""

    format: Literal["text", "json"] = "text"


class BrokerConfig(_Config):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    description: str = ""
    database: str | None = None
    state_dir: Path | None = None
    quota: QuotaConfig
    offers: OffersConfig = OffersConfig()
    units: list[UnitConfig] = Field(default_factory=list)
    pricing: PricingConfig | None = None
    defaults: DefaultsConfig = DefaultsConfig()
    platforms: list[PlatformConfig] = Field(min_length=1)
    users: list[UserConfig] = Field(default_factory=list)
    monitor: MonitorConfig = MonitorConfig()
    tes: TesConfig = TesConfig()
    logging: LoggingConfig = LoggingConfig()
    retention: RetentionConfig = RetentionConfig()

    @model_validator(mode="after")
    def _unique_tokens(self) -> BrokerConfig:
        tokens = [user.token_digest for user in self.users]
        if len(tokens) != len(set(tokens)):
            raise ValueError("users: two users share a token")
        return self

    @property
    def state_path(self) -> Path:
        return (self.state_dir or Path("var") / self.name).resolve()

    @property
    def database_url(self) -> str:
        url = os.environ.get("EXECBROKER_DATABASE_URL") or self.database
        return url or f"sqlite:///{self.state_path / 'broker.db'}"

    def offer_rules(self) -> OfferRules:
        return OfferRules(
            max_offers=self.offers.max,
            ttl=self.offers.ttl,
            units=tuple(unit.to_unit() for unit in self.units),
            pricing=self.pricing.to_pricing() if self.pricing else None,
        )


def load_config(path: str | Path, **overrides: Any) -> BrokerConfig:
    """Read a broker's YAML file; ``overrides`` replace top-level keys (tests, the demo)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    data.update({key: value for key, value in overrides.items() if value is not None})
    config = BrokerConfig.model_validate(data)
    if config.state_dir is not None and not config.state_dir.is_absolute():
        config = config.model_copy(update={"state_dir": path.parent / config.state_dir})
    return config
