"""Command-line pieces every subcommand shares: the help formatter and argparse value types.

Below every stage (no imports from `tagger`), so `tagger.cli` and the stages' own command
modules (`tagger.clean.command`, `tagger.inference.command`) use the same ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs as written; every option's help ends with its default when it has one (None and
    off switches have none: their help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or action.required
            or default is None
            or default is False
            or default is argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: %(default)s)"


def _number(value: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(value)
    except ValueError:
        name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{value!r} is not {name}") from None


def positive_int(value: str) -> int:
    number = int(_number(value, int))
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def non_negative_int(value: str) -> int:
    number = int(_number(value, int))
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def unit(value: str) -> float:
    """A share in (0, 1]."""
    number = _number(value, float)
    if not 0.0 < number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return number


def probability(value: str) -> float:
    """A probability in [0, 1]."""
    number = _number(value, float)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..1")
    return number


def at_least_one(value: str) -> float:
    number = _number(value, float)
    if number < 1.0:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return number


def positive(value: str) -> float:
    number = _number(value, float)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return number


def existing_file(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return path.resolve()


def existing_dir(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: no such folder")
    return path.resolve()
