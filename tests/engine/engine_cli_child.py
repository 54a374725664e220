"""Run ``rightfocus`` in a child process with metric stand-ins for modules still missing."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import engine_standins

engine_standins.install()

from rightfocus.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
