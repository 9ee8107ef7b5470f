"""`python -m alter_cli` runs the `alter` CLI."""

from alter_cli.entry import main

if __name__ == "__main__":
    main()
