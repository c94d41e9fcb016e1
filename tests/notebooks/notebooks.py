"""Small notebooks and requests for them, built in code so each test shows its cells."""

from __future__ import annotations

from typing import Any


def _cell(source: str, number: int, tags: list[str]) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "id": f"cell-{number}",
        "metadata": {"tags": tags} if tags else {},  # as editors write them: no empty tags
        "source": source,
        "outputs": [],
        "execution_count": None,
    }


def notebook(*cells: str, parameters: str | None = None) -> dict[str, Any]:
    """An nbformat v4.5 notebook of code cells; ``parameters`` becomes the tagged first cell."""
    sources = [(parameters, ["parameters"])] if parameters is not None else []
    sources += [(source, []) for source in cells]
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": [_cell(source, number, tags) for number, (source, tags) in enumerate(sources)],
    }


def notebook_request(
    content: dict[str, Any] | None = None,
    *,
    location: str | None = None,
    mode: str = "batch",
    parameters: dict[str, Any] | None = None,
    duration: str = "PT2M",
    memory: int = 1,
) -> dict[str, Any]:
    executable: dict[str, Any] = {"kind": "jupyter-notebook", "mode": mode}
    if content is not None:
        executable["notebook"] = content
    if location is not None:
        executable["location"] = location
    if parameters:
        executable["parameters"] = parameters
    return {
        "executable": executable,
        "compute": {
            "kind": "simple-compute-resource",
            "cores": {"min": 1, "max": 1},
            "memory": {"min": memory, "max": memory},
        },
        "schedule": {"requested": {"duration": duration}},
    }
