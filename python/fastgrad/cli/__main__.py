"""``python -m fastgrad.cli``: the same as the ``fastgrad`` command."""

from . import main

raise SystemExit(main())
