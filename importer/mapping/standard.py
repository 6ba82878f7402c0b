"""Checks values of MoEngage's standard attributes (importer/moengage/catalogue.py): a value outside
the attribute's enum, or not of its shape (an email, a "lat lon" location), breaks a rule."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from importer.mapping.arrow import bool_mask, drop
from importer.mapping.cells import Converted, problem
from importer.moengage import catalogue


def checked_values(
    series: pd.Series,
    convert: Callable[[pd.Series], Converted],
    standard: catalogue.StandardAttribute,
    column: str,
) -> Converted:
    """The converted values, less those MoEngage's schema refuses for a standard attribute
    (a value outside its enum, an email that is not one): those rows break a rule."""
    fragments, errors = convert(series)
    distinct = pc.unique(fragments).drop_null().to_pylist()
    refused = {}
    for text in distinct:
        rule = standard.value_problem(orjson.loads(text))
        if rule is not None:
            refused[text] = rule
    if not refused:
        return fragments, errors
    bad = bool_mask(pc.is_in(fragments, value_set=pa.array(list(refused), pa.string())))
    errors = dict(errors)
    for position in np.flatnonzero(bad):
        text = fragments[int(position)].as_py()
        errors[int(position)] = problem(column, orjson.loads(text), refused[text])
    return drop(fragments, errors), errors
