"""The ``execbroker`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="An IVOA ExecutionBroker: offers, sessions and real execution.", no_args_is_help=True
)


@app.command()
def serve(
    config: Annotated[
        Path, typer.Option("--config", "-c", exists=True, dir_okay=False, help="broker YAML")
    ],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run one broker."""
    import logging

    import uvicorn

    from execbroker.api.app import create_app
    from execbroker.config import load_config

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    broker = load_config(config)
    uvicorn.run(create_app(broker), host=host, port=port, log_level=log_level)


@app.callback()
def main() -> None:
    """An IVOA ExecutionBroker: offers, sessions and real execution."""


if __name__ == "__main__":
    app()
