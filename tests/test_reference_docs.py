"""docs/REFERENCE.md's generated tables match the code, and the job files the docs and configs
show use only keys the models accept."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import reference_docs
from tests.support import ROOT


def test_the_generated_sections_match_the_code() -> None:
    text = reference_docs.REFERENCE.read_text()
    found = {name: body for name, body, _ in reference_docs.blocks(text)}
    assert set(found) == set(reference_docs.SECTIONS), "every section is in the page once"
    stale = [name for name, body in found.items() if body != reference_docs.section(name)]
    if stale:
        pytest.fail(
            f"docs/REFERENCE.md is stale in {', '.join(stale)}: run `make docs`",
            pytrace=False,
        )


def test_rendering_twice_changes_nothing() -> None:
    once = reference_docs.render(reference_docs.REFERENCE.read_text())
    assert reference_docs.render(once) == once


def key_paths(tree: Any, known: set[str], prefix: str = "") -> Iterator[str]:
    """Every key path a parsed job file uses, a name the user chose read as `NAME`."""
    if not isinstance(tree, dict):
        return
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if path not in known and f"{prefix}NAME" in known:
            path = f"{prefix}NAME"
        yield path
        yield from key_paths(value, known, f"{path}.")


def yaml_examples(path: Path) -> Iterator[str]:
    text = path.read_text()
    if path.suffix == ".md":
        yield from re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    else:
        yield text


@pytest.mark.parametrize(
    "path", ["docs/REFERENCE.md", "README.md", "configs/example.yaml", "configs/demo.yaml"]
)
def test_job_files_shown_use_only_keys_the_models_accept(path: str) -> None:
    keys = [key.split(".") for key, *_ in reference_docs.job_keys()]
    known = {".".join(parts[:n]) for parts in keys for n in range(1, len(parts) + 1)}
    unknown = []
    for example in yaml_examples(ROOT / path):
        tree = yaml.safe_load(example)
        if isinstance(tree, dict) and ("mapping" in tree or "api" in tree):
            unknown += [key for key in key_paths(tree, known) if key not in known]
    assert not unknown, f"{path} shows keys the job models do not accept: {unknown}"
