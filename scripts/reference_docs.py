"""docs/REFERENCE.md's generated tables: the job-file keys from the pydantic models, the CLI
flags from argparse. `make docs` (cog -r) writes them; tests/test_reference_docs.py fails
when the page differs from a fresh rendering.

A cog block in the page names a section:

    <!-- [[[cog
    import cog, scripts.reference_docs as ref
    cog.out(ref.section("job-keys"))
    ]]] -->
    ... the rendered table ...
    <!-- [[[end]]] -->

Run as `python -m scripts.reference_docs [--check] [PATH]` it rewrites (or checks) the
blocks without cog installed.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import io
import json
import re
import sys
import tokenize
import types
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from importer import sandbox
from importer.cli import build_parser
from importer.config import JobConfig

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "REFERENCE.md"

# Commands whose flags are listed, in this order (the sandbox's options need `sandbox` in argv).

BLOCK = re.compile(
    r"(?P<head><!-- \[\[\[cog\n(?P<code>.*?)\]\]\] -->\n)"
    r"(?P<body>.*?)"
    r"(?P<tail><!-- \[\[\[end\]\]\] -->)",
    re.DOTALL,
)
SECTION_CALL = re.compile(r"""section\(["']([a-z-]+)["']\)""")


# ----------------------------------------------------------------------------- job-file keys


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _options(annotation: Any) -> tuple[list[Any], bool]:
    """The members of a union (or the one type), and whether null is allowed."""
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        members = [_unwrap(a) for a in get_args(annotation)]
        return [m for m in members if m is not type(None)], type(None) in members
    return [annotation], False


SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    Path: "path",
    SecretStr: "string (secret)",
    Any: "any",
}


def type_name(annotation: Any) -> str:
    """A job-file reader's name for a field's type: `string`, `"a" | "b"`, `list of string`,
    `map of name to {...}`; `or null` when it may be left empty."""
    members, nullable = _options(annotation)
    names = [_one_type_name(member) for member in members]
    return " | ".join(names) + (" or null" if nullable else "")


def _one_type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(f'"{value}"' for value in get_args(annotation))
    if origin is list:
        return f"list of {type_name(get_args(annotation)[0])}"
    if origin is dict:
        return f"map of name to {type_name(get_args(annotation)[1])}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(f'"{member.value}"' for member in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ""  # a section: its keys give their own defaults
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str | Path):
        return f"`{json.dumps(str(value))}`"
    if isinstance(value, list | tuple):
        return "`[" + ", ".join(_default_value(v).strip("`") for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        return _default_value(info.default_factory())  # type: ignore[call-arg]
    if info.default is PydanticUndefined:
        return ""
    return _default_value(info.default)


@cache
def _comments(model: type[BaseModel]) -> dict[str, str]:
    """The comments the model's source gives each field: the comment lines just above it and
    the one at the end of its line (the models say what a key means in comments)."""
    try:
        lines = inspect.getsource(model).splitlines()
    except (OSError, TypeError):
        return {}
    comments = {
        token.start[0] - 1: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline)
        if token.type == tokenize.COMMENT
    }
    found: dict[str, str] = {}
    for number, line in enumerate(lines):
        field = re.match(r"    (\w+)\s*:", line)
        if field is None or field[1] not in model.model_fields:
            continue
        above: list[str] = []
        before = number - 1
        while before >= 0 and lines[before].strip().startswith("#"):
            above.insert(0, comments.get(before, ""))
            before -= 1
        trailing = [comments[number]] if number in comments and "#" in line else []
        text = " ".join([*above, *trailing])
        if text:
            found[field[1]] = text
    return found


def _description(model: type[BaseModel], name: str, info: FieldInfo, key: str) -> str:
    """The field's description, else its comments, else the first paragraph of the docstring
    of the section it opens (without the key path it may start with)."""
    found = info.description or _comments(model).get(name, "")
    if found:
        return found
    for _, submodel in _submodels(info.annotation):
        doc = (submodel.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            return " ".join(doc.removeprefix(f"{key}:").split())
    return ""


def _submodels(annotation: Any) -> Iterator[tuple[str, type[BaseModel]]]:
    """The models under a field, with the path step that reaches each: `` for the field
    itself, `.NAME` for a map's values, `[]` for a list's items."""
    members, _ = _options(annotation)
    for member in members:
        origin = get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            yield "", member
        elif origin is dict:
            yield from ((".NAME" + step, m) for step, m in _submodels(get_args(member)[1]))
        elif origin is list:
            yield from (("[]" + step, m) for step, m in _submodels(get_args(member)[0]))


def job_keys(
    model: type[BaseModel] = JobConfig, prefix: str = ""
) -> Iterator[tuple[str, str, str, str]]:
    """(key path, type, default, description) for every key the job file accepts, depth first
    in the models' field order."""
    for name, info in model.model_fields.items():
        key = f"{prefix}{info.alias or name}"
        yield (
            key,
            type_name(info.annotation),
            default_text(info),
            _description(model, name, info, key),
        )
        seen: set[type[BaseModel]] = set()
        for step, submodel in _submodels(info.annotation):
            if submodel not in seen:
                seen.add(submodel)
                yield from job_keys(submodel, f"{key}{step}.")


def job_keys_markdown() -> str:
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, kind, default, description in job_keys():
        rows.append(f"| `{key}` | {_cell(kind)} | {_cell(default)} | {_cell(description)} |")
    return "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------- CLI flags


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flag_rows(parser: argparse.ArgumentParser) -> Iterator[str]:
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            names = ", ".join(f"`{name}`" for name in action.option_strings)
        else:
            names = f"`{action.metavar or action.dest}` (argument)"
        if action.nargs == 0:
            value = ""
        elif action.choices is not None:
            value = " \\| ".join(f"`{choice}`" for choice in action.choices)
        else:
            value = f"`{action.metavar or action.dest.upper()}`"
        default = action.default
        hidden = default is None or isinstance(default, bool) or not action.option_strings
        shown = "" if hidden else f"`{default}`"
        meaning = formatter._expand_help(action) if action.help else ""
        yield f"| {names} | {value} | {_cell(shown)} | {_cell(meaning)} |"


def cli_flags_markdown() -> str:
    """A table of arguments and options for each command, as `--help` gives them."""
    commands = _subcommands(build_parser(["sandbox"]))
    if not any(
        action.option_strings != ["-h", "--help"] for action in commands["sandbox"]._actions
    ):
        # A parser that adds the sandbox's options only when running it: add them here.
        sandbox.add_arguments(commands["sandbox"])
    parts = []
    for name, parser in commands.items():  # every command, in --help order
        rows = ["| option | value | default | meaning |", "| --- | --- | --- | --- |"]
        parts.append(f"#### `moe-import {name}`\n\n" + "\n".join([*rows, *_flag_rows(parser)]))
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- the page

SECTIONS: dict[str, Callable[[], str]] = {
    "job-keys": job_keys_markdown,
    "cli-flags": cli_flags_markdown,
}


def section(name: str) -> str:
    """The rendered text of one generated section (what a cog block in the page outputs)."""
    return SECTIONS[name]()


def blocks(text: str) -> Iterator[tuple[str, str, re.Match[str]]]:
    """(section name, text the page holds, the block) for each generated block of a page."""
    for block in BLOCK.finditer(text):
        yield _name(block), block["body"], block


def render(text: str) -> str:
    """The page with every generated block rendered afresh (as `cog -r` writes it)."""
    return BLOCK.sub(lambda block: block["head"] + section(_name(block)) + block["tail"], text)


def _name(block: re.Match[str]) -> str:
    called = SECTION_CALL.search(block["code"])
    if called is None:
        raise ValueError(f"a cog block names no section:\n{block['code']}")
    return called[1]


def stale_sections(path: Path = REFERENCE) -> list[str]:
    """The sections whose text in the page differs from a fresh rendering."""
    return [name for name, body, _ in blocks(path.read_text()) if body != section(name)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("path", nargs="?", type=Path, default=REFERENCE)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_sections(args.path)
        for name in stale:
            print(f"{args.path}: section {name!r} differs from the code (run `make docs`)")
        return 1 if stale else 0
    args.path.write_text(render(args.path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
