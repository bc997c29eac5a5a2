"""`python -m aglora` runs the command-line tool."""

from aglora.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
