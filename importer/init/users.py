"""`init` for a users file: the mapping block and the whole users job."""

from __future__ import annotations

from importer import moengage
from importer.config import attribute_name_problem
from importer.init.model import Guess, JobGuess
from importer.init.naming import attribute_name_for
from importer.init.render import (
    api_lines,
    attribute_spec,
    check_lines,
    customer_id_lines,
    flow,
    header_lines,
    line,
    output_lines,
    scalar,
    source_lines,
)
from importer.moengage import catalogue


def _attribute_lines(
    guesses: dict[str, Guess], customer_id: str | None, platforms: str | None
) -> list[str]:
    """The attributes block (the platforms column, if any, is mapped apart)."""
    lines = [line("  attributes:", "MoEngage attribute: column, or {column, type, ...}")]
    # Columns whose names are valid keep them; renamed ones must not take those.
    taken = {column for column in guesses if attribute_name_problem(column) is None}
    custom = typed = 0
    for guess in guesses.values():
        if guess.column in (customer_id, platforms):
            continue
        if guess.type == "platforms":
            note = f"platform names too; mapping.platforms reads {platforms!r}"
            guess = Guess(guess.column, checks=[*guess.checks, note])
        lines += check_lines("    ", guess.checks)
        if guess.type == "skip":
            lines.append(f"    # {scalar(guess.column)}: skipped, not importable as it is")
            continue
        name, renamed = attribute_name_for(guess.column, taken)
        standard = catalogue.propose_for_column(guess.column, guess.type, taken)
        if standard is not None:
            name, renamed = standard[0], None
        taken.add(name)
        if renamed:
            lines += check_lines("    ", [f"renamed from column {guess.column!r}: {renamed}"])
        custom += name not in moengage.SYSTEM_ATTRIBUTES
        entry = f"{scalar(name)}: {attribute_spec(guess)}"
        if custom > moengage.MAX_CUSTOM_ATTRIBUTES:
            limit = f"over MoEngage's limit of {moengage.MAX_CUSTOM_ATTRIBUTES} custom attributes"
            lines.append(line(f"    # {entry}", limit))
            continue
        lines.append(line(f"    {entry}", standard[1] if standard else ""))
        typed += 1
    if not any(entry.startswith("    ") and not entry.lstrip().startswith("#") for entry in lines):
        # An empty `attributes:` is YAML null, which validate refuses: say {} and why.
        note = "nothing typed: no column to send as it is (see below)" if len(lines) > 1 else ""
        lines[0] = line("  attributes: {}", note)
    return lines


def _mapping_lines(guess: JobGuess) -> list[str]:
    samples, guesses, customer_id = guess.samples, guess.columns, guess.customer_id
    platforms = guess.platforms
    attributes = _attribute_lines(guesses, customer_id, platforms)
    if platforms is not None:
        platform_line = line(f"  platforms: {flow({'column': platforms})}", "ANDROID, iOS, web")
    else:
        platform_line = line("  # platforms: {column: platform}", "or a list: [ANDROID, web]")
    return [
        "mapping:",
        *customer_id_lines(samples, customer_id),
        line("  update_existing_only: false", "true: only update users MoEngage knows"),
        *attributes,
        line("  # add_to_array:", "-> attributes.addValueToArrayField"),
        '  #   tags: {column: new_tags, separator: "|"}',
        line("  # remove_from_array:", "-> attributes.removeValueFromArrayField"),
        platform_line,
        line("  identifiers: []", "Identity Resolution, with customer_id null"),
        "",
    ]


def render_job(guess: JobGuess) -> str:
    """The commented YAML job file for a guess."""
    lines = [
        *header_lines(guess.input_path, guess.samples),
        *api_lines(),
        *source_lines(guess.input_path, guess.samples, guess.format),
        *_mapping_lines(guess),
        line("sync: {mode: changed}", "send only rows changed since last accepted; all: every row"),
        *output_lines(guess.input_path),
    ]
    return "\n".join(lines) + "\n"
