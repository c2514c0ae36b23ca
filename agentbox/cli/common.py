"""What every command shares: exit codes, errors, the daemon connection, JSON output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn

from agentbox import config, jsonstrict
from agentbox.config import EX_CONFIG, ConfigError
from agentbox.control_client import ControlClient, ControlError, socket_path

EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_FAILED = 1
EX_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class CliError(Exception):
    def __init__(self, message: str, code: int = EX_FAILED) -> None:
        super().__init__(message)
        self.code = code


def print_json(data: Any) -> None:
    print(jsonstrict.dumps(data, indent=2, ensure_ascii=False))


def load_config(args: argparse.Namespace) -> config.Loaded:
    try:
        return config.load(getattr(args, "config", None))
    except ConfigError as exc:
        raise CliError(f"bad configuration: {exc}", EX_CONFIG) from None


def connect(args: argparse.Namespace, timeout: float | None = 10.0) -> ControlClient:
    try:
        return ControlClient(socket_path(config.default_state_dir()), timeout)
    except ControlError as exc:
        raise CliError(exc.message, EX_UNAVAILABLE) from None


# What the daemon says when the request itself is wrong: a usage error, like argparse's.
BAD_INPUT = frozenset({"invalid_request", "payload_too_large"})


def refused(exc: ControlError, message: str | None = None) -> CliError:
    """A daemon's refusal as a CLI error: exit 2 when the input was wrong, else 1."""
    return CliError(message or exc.message, EX_USAGE if exc.code in BAD_INPUT else EX_FAILED)


def call(args: argparse.Namespace, op: str, **params: Any) -> dict[str, Any]:
    """One request to the daemon; its errors become CLI errors."""
    with connect(args) as client:
        try:
            return client.call(op, **params)
        except ControlError as exc:
            raise refused(exc) from None


def print_list(
    items: list[dict[str, Any]], as_json: bool, empty: str, line: Callable[[dict[str, Any]], str]
) -> None:
    """A listing: JSON, or one line per item, or what to do when there is nothing yet."""
    if as_json:
        print_json(items)
        return
    if not items:
        print(empty)
    for item in items:
        print(line(item))


def local_time(t: float) -> str:
    return datetime.fromtimestamp(t).isoformat(sep=" ", timespec="seconds")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"agentbox: error: {message}\n")
