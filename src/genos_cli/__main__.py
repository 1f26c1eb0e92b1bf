"""`python -m genos_cli` runs the `genos` command."""

from genos_cli.cli.app import main

if __name__ == "__main__":
    main()
