"""`python -m moire_cli` = the `moire` console script."""

from moire_cli.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
