"""What every command shares: the console on standard error, logging, failing with a message,
and reading a secret."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

import typer
from rich.console import Console

# messages and logs go to standard error; standard output carries only what a script reads
# (a new token, the mailbox table)
console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=True)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)
    for noisy in ("imapclient", "sqlalchemy.engine", "uvicorn.access", "multipart"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def read_secret(from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = typer.prompt(prompt, hide_input=True)
    if not value:
        fail(f"{prompt} is empty")
    return value
