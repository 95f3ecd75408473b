"""Allow ``python -m wsfleet`` as an alias of the ``wsfleet`` command."""

from wsfleet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
