"""`python -m importer` is the same as the `moe-import` console script."""

from importer.cli import main

raise SystemExit(main())
