"""`python -m importer.sandbox ARGS`: the sandbox alone, as the tests and benches start it."""

from __future__ import annotations

import argparse

from importer.sandbox.cli import DESCRIPTION, add_arguments, run_from_args

_parser = argparse.ArgumentParser(prog="python -m importer.sandbox", description=DESCRIPTION)
add_arguments(_parser)
raise SystemExit(run_from_args(_parser.parse_args()))
