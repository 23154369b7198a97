"""Errors raised for bad label-system files."""

from __future__ import annotations

from pathlib import Path


class LabelSystemError(ValueError):
    """A label-system file is invalid: names the file, the entry and what is allowed.

    >>> str(LabelSystemError("tax.yaml", "tags[3].category", "unknown category 'x'"))
    "tax.yaml: tags[3].category: unknown category 'x'"
    """

    def __init__(self, file: str | Path | None, entry: str, message: str) -> None:
        self.file = str(file) if file is not None else "<memory>"
        self.entry = entry
        self.message = message
        super().__init__(f"{self.file}: {entry}: {message}")


def format_pydantic_error(file: str | Path | None, error: object) -> LabelSystemError:
    """Turn a pydantic ValidationError into a LabelSystemError naming the first bad entry."""
    from pydantic import ValidationError

    assert isinstance(error, ValidationError)
    first = error.errors()[0]
    loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"])
    loc = loc.replace(".[", "[")
    given = first.get("input")
    msg = first["msg"]
    if given is not None and not isinstance(given, dict | list):
        msg = f"{msg} (given: {given!r})"
    return LabelSystemError(file, loc or "<root>", msg)
