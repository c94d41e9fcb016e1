"""Data resources and the volumes that mount them: which a broker can stage, and where.

A ``simple-data-resource`` is one file at an ``http(s)`` ``location``; a
``simple-volume-mount`` in ``compute.volumes[]`` names it (``resource``: the data
resource's ``meta.name``, its ``name`` or its ``meta.uuid``) and gives the directory
(``path``) the task sees it in and whether it may write there (``mode``). The file is
``<path>/content`` (the name the reference implementation gives it, so its clients find
it), and ``<path>`` holds nothing else.

A data resource no volume names is staged too, under ``/data/<its index>`` (never
silently ignored). Kinds no broker can stage here (S3, IVOA, SKAO, Rucio: no such service
is reachable) are reasons for NO, as is anything malformed that the schema allows.

Pure: parsing and checking only; ``platforms.staging`` fetches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import ConfigDict, ValidationError

from execbroker import kinds
from execbroker.model.common import KindedModel

CONTENT = "content"  # the file's name inside its mount directory
UNMOUNTED = PurePosixPath("/data")  # where data no volume names is placed
# A data resource is fetched whole within this time; offers book it as preparation time.
STAGING_ALLOWANCE = timedelta(seconds=60)
MAX_DATA_BYTES = 256 * 1024 * 1024  # per resource: fetched into memory, then written
# Where no data may be mounted: the system's own directories (a bind there would hide the
# task's libraries or the kernel's interfaces) and the task's own work directory.
RESERVED = tuple(
    PurePosixPath(p)
    for p in ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc")
) + tuple(PurePosixPath(p) for p in ("/run", "/sbin", "/sys", "/usr", "/task", "/session"))
_CHECKSUM = re.compile(r"^(sha256|sha512|md5):([0-9a-fA-F]+)$")
_DIGEST_LENGTH = {"sha256": 64, "sha512": 128, "md5": 32}
_PATH_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

UNSTAGEABLE = {
    kinds.S3_DATA: "no S3 service is reachable from this broker",
    kinds.IVOA_DATA: "no IVOA data service is reachable from this broker",
    kinds.SKAO_DATA: "no SKAO data service is reachable from this broker",
    kinds.RUCIO_DATA: "no Rucio service is reachable from this broker",
}


class SimpleDataResource(KindedModel):
    """The schema's simple-data-resource; ``checksum`` (``sha256:<hex>``) is ours, optional."""

    model_config = ConfigDict(extra="ignore")  # extra properties are named elsewhere

    kind: Literal[kinds.SIMPLE_DATA] = kinds.SIMPLE_DATA  # type: ignore[valid-type]
    location: str | None = None
    checksum: str | None = None


class SimpleVolumeMount(KindedModel):
    model_config = ConfigDict(extra="ignore")

    kind: Literal[kinds.SIMPLE_VOLUME] = kinds.SIMPLE_VOLUME  # type: ignore[valid-type]
    path: str | None = None
    mode: Literal["READONLY", "READWRITE"] = "READONLY"
    resource: str | None = None


@dataclass(frozen=True, slots=True)
class DataMount:
    """One file to fetch and where the task sees it: ``<path>/content``."""

    index: int  # in the request's data[]: names the resource in messages
    location: str
    path: PurePosixPath  # the directory, absolute
    readonly: bool
    checksum: tuple[str, str] | None = None  # (algorithm, lower-case hex digest)

    @property
    def file(self) -> PurePosixPath:
        return self.path / CONTENT

    def as_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "location": self.location,
            "path": str(self.path),
            "readonly": self.readonly,
            "checksum": list(self.checksum) if self.checksum else None,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> DataMount:
        checksum = value.get("checksum")
        return cls(
            index=int(value["index"]),
            location=str(value["location"]),
            path=PurePosixPath(value["path"]),
            readonly=bool(value["readonly"]),
            checksum=(str(checksum[0]), str(checksum[1])) if checksum else None,
        )


@dataclass(frozen=True, slots=True)
class DataPlan:
    mounts: tuple[DataMount, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def preparing(self) -> timedelta:
        """The time the offer books for staging, before the task's own."""
        return STAGING_ALLOWANCE * len(self.mounts)


def mount_path_reason(path: str | None) -> str | None:
    """Why ``path`` cannot be a mount directory, or None: absolute, plain names (no ``..``,
    no links to follow, nothing a shell or a bind would read otherwise), outside the
    system's directories."""
    if not path:
        return "path is required"
    pure = PurePosixPath(path)
    if not pure.is_absolute() or str(pure) != path.rstrip("/") or len(pure.parts) < 2:
        return f"path {path[:100]!r} must be an absolute directory below / such as /input"
    if not all(_PATH_PART.match(part) for part in pure.parts[1:]):
        return (
            f"path {path[:100]!r}: each part must be a plain name "
            "(letters, digits, '.', '_', '-'; not starting with '.' or '-')"
        )
    for reserved in RESERVED:
        if pure == reserved or pure.is_relative_to(reserved):
            return f"path {path[:100]!r} is inside {reserved}, which no data may cover"
    return None


def _checksum(value: str | None) -> tuple[str, str] | str | None:
    """(algorithm, digest), None when not given, or the reason it is unusable."""
    if value is None:
        return None
    found = _CHECKSUM.match(value.strip())
    if not found or len(found.group(2)) != _DIGEST_LENGTH[found.group(1)]:
        return f"checksum {value[:100]!r} must be sha256:<64 hex>, sha512:<128 hex> or md5:<32 hex>"
    return found.group(1), found.group(2).lower()


def _names(item: dict[str, Any]) -> set[str]:
    meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
    found = {item.get("name"), meta.get("name"), meta.get("uuid")}
    return {name for name in found if isinstance(name, str) and name}


def _error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def _volumes(
    raw: list[dict[str, Any]], data: list[dict[str, Any]], reasons: list[str]
) -> dict[int, SimpleVolumeMount]:
    """Each volume's data resource (by index), with a reason for every volume unusable."""
    chosen: dict[int, SimpleVolumeMount] = {}
    seen_paths: set[str] = set()
    for number, item in enumerate(raw):
        field = f"compute.volumes[{number}]"
        kind = kinds.canonical(str(item.get("kind", "")))
        if kind != kinds.SIMPLE_VOLUME:
            reasons.append(f"{field}: this broker mounts simple-volume-mount only, not {kind!r}")
            continue
        try:
            volume = SimpleVolumeMount.model_validate(item)
        except ValidationError as error:
            reasons.append(f"{field}.{_error(error)}")
            continue
        problem = mount_path_reason(volume.path)
        if problem is None and volume.path in seen_paths:
            problem = f"path {volume.path!r} is mounted twice"
        if problem is not None:
            reasons.append(f"{field}: {problem}")
            continue
        seen_paths.add(str(volume.path))
        matches = [i for i, d in enumerate(data) if volume.resource in _names(d)]
        if not volume.resource or len(matches) != 1:
            what = _reference_reason(volume.resource, len(matches), "data resource")
            reasons.append(f"{field}.resource: {what}")
            continue
        if matches[0] in chosen:
            reasons.append(f"{field}.resource: data[{matches[0]}] is mounted twice")
            continue
        chosen[matches[0]] = volume
    return chosen


def _storage_reason(item: dict[str, Any], storage: list[dict[str, Any]]) -> str | None:
    """Why a data resource's ``storage`` reference is unusable: it must name exactly one of
    the request's storage resources (none given: the broker places the data itself)."""
    wanted = item.get("storage")
    if wanted is None:
        return None
    matches = [s for s in storage if isinstance(wanted, str) and wanted in _names(s)]
    if len(matches) == 1:
        return None
    return _reference_reason(wanted, len(matches), "storage resource of this request")


def _reference_reason(wanted: object, matches: int, what: str) -> str:
    """Why a reference by name that should match exactly one resource does not."""
    count = "names no" if not matches else "names more than one"
    return f"{wanted!r} {count} {what} (by meta.name, name or meta.uuid)"


def plan_data(
    data: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    storage: list[dict[str, Any]] | None = None,
) -> DataPlan:
    """What to stage and mount for a request's ``data[]`` and ``compute.volumes[]``,
    or the reasons (one per problem, naming the field) this broker must answer NO;
    ``storage``: the request's ``storage[]``, which data's ``storage`` fields refer to."""
    reasons: list[str] = []
    chosen = _volumes(volumes, data, reasons)
    mounts: list[DataMount] = []
    for index, item in enumerate(data):
        field = f"data[{index}]"
        dangling = _storage_reason(item, storage or [])
        if dangling is not None:
            reasons.append(f"{field}.storage: {dangling}")
            continue
        kind = kinds.canonical(str(item.get("kind", "")))
        if kind in UNSTAGEABLE:
            reasons.append(f"{field}: cannot stage a {kinds.alias(kind)}: {UNSTAGEABLE[kind]}")
            continue
        if kind != kinds.SIMPLE_DATA:
            reasons.append(f"{field}: this broker cannot stage data resources of kind {kind!r}")
            continue
        try:
            resource = SimpleDataResource.model_validate(item)
        except ValidationError as error:
            reasons.append(f"{field}.{_error(error)}")
            continue
        problem = _location_reason(resource.location)
        checksum = _checksum(resource.checksum)
        if problem is None and isinstance(checksum, str):
            problem = checksum
        if problem is not None:
            reasons.append(f"{field}: {problem}")
            continue
        volume = chosen.get(index)
        path = PurePosixPath(volume.path) if volume and volume.path else UNMOUNTED / str(index)
        assert resource.location is not None
        mounts.append(
            DataMount(
                index=index,
                location=resource.location,
                path=path,
                readonly=volume is None or volume.mode == "READONLY",
                checksum=checksum if isinstance(checksum, tuple) else None,
            )
        )
    if reasons:
        return DataPlan((), tuple(reasons))
    return DataPlan(tuple(mounts))


def _location_reason(location: str | None) -> str | None:
    if not location:
        return "location is required to stage a simple-data-resource"
    scheme = location.split(":", 1)[0].lower() if ":" in location else ""
    if scheme not in ("http", "https"):
        return f"this broker stages http and https locations only, not {location[:100]!r}"
    return None
