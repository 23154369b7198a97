"""What every `python -m flows.<name>` does at its edge: bad input is one line and exit code 2.

A config loader raises ValueError or FileNotFoundError naming the file and field; the entry
point prints that message (no traceback) and exits 2, as the `tagger` command does. A config
file argument is checked before anything starts (Prefect's temporary server takes seconds).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


def existing_file(value: str) -> str:
    """argparse `type=` for a file that must exist."""
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    return value


def run_entry_point(prog: str, main: Callable[[], object]) -> NoReturn:
    """Run a flow module's `main`; a ValueError or FileNotFoundError exits 2 with one line."""
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0)
