"""``python -m fastgrad``: the same as the ``fastgrad`` command (see :mod:`fastgrad.cli`)."""

from .cli import main

raise SystemExit(main())
