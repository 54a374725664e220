"""Run the ``rightfocus`` command line in a child process (``python engine_cli_child.py ...``)."""

from __future__ import annotations

from rightfocus.cli import main

if __name__ == "__main__":
    main()
