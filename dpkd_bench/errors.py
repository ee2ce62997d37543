"""Error types that separate a user's mistake (exit 2) from an internal fault (exit 1)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: reported as one ``error:`` line, exit status 2.

    The message says what is wrong, why it matters and how to fix it, on one line.
    """


class RecipeError(UserError):
    """A recipe (YAML or override) that does not fit the schema."""


class DataError(UserError):
    """A data file or dataset that cannot be used."""
