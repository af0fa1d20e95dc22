"""How a state_dict fails to fit a model, in the words every weights loader reports."""

from __future__ import annotations

LISTED_KEYS = 6


def listing(items: list[str], limit: int = LISTED_KEYS) -> str:
    """The first `limit` items, comma-separated, and how many more there are."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def fit_problems(missing=(), unexpected=(), mismatched=()) -> str:
    """'unexpected keys ...; missing keys ...; shape mismatches ...', or '' when all fit.

    Unexpected keys come first: for a wrong file they are what tells the user which
    model it really holds.
    """
    parts = [f"{what} {listing(list(keys))}" for what, keys in (
        ("unexpected keys", unexpected), ("missing keys", missing),
        ("shape mismatches", mismatched)) if keys]
    return "; ".join(parts)
