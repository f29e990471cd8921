"""pandera failures as one line: the column, the rule it broke, a few failing values."""

from __future__ import annotations

import pandera.errors


def describe_schema_error(error: pandera.errors.SchemaError) -> str:
    """'column X breaks CHECK; failing values e.g. [...]' for a pandera SchemaError."""
    cases = error.failure_cases
    if isinstance(cases, str):  # e.g. a missing column: pandera names it as a bare string
        return f"column {cases!r} breaks {error.check}"
    examples = "" if cases is None else f"; failing values e.g. {list(getattr(cases, 'failure_case', cases))[:3]}"
    return f"column {getattr(error.schema, 'name', '?')!r} breaks {error.check}{examples}"
