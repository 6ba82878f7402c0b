"""`moe-import init`: a commented job file for an input, with types guessed from a sample."""

from __future__ import annotations

from importer.init.columns import guess_columns
from importer.init.events import event_columns, render_events_job
from importer.init.model import JobGuess
from importer.init.naming import guess_customer_id
from importer.init.sampling import sample_input, source_format
from importer.init.users import render_job


def guess_job(input_path: str) -> JobGuess:
    """Find and sample the input as the job will read it, and guess the mapping (raises
    ScaffoldError). Nothing here writes YAML: `render_job` and `render_events_job` do."""
    samples = sample_input(input_path)
    columns = guess_columns(samples)
    customer_id = guess_customer_id(list(columns))
    platforms = next(
        (g.column for g in columns.values() if g.type == "platforms" and g.column != customer_id),
        None,
    )
    fmt = source_format(input_path, samples)
    return JobGuess(input_path, samples, fmt, columns, customer_id, platforms)


def scaffold_job(input_path: str, events: bool = False) -> str:
    """A commented YAML job file for the input, ready for review (raises ScaffoldError).

    An events job when `events` asks for one, or when the input has an event-name and a
    timestamp column (see importer.init.events)."""
    guess = guess_job(input_path)
    found = event_columns(guess)
    if events or found is not None:
        return render_events_job(guess, found)
    return render_job(guess)
