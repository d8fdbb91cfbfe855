"""The one exception type for mistakes a user can fix.

Entry points catch :class:`UserError`, print its message as a single line and exit non-zero,
so every message must say what is wrong *and* how to fix it. Programming errors stay ordinary
exceptions and keep their tracebacks.
"""


class UserError(Exception):
    """Bad input (config, data on disk, weights file) that the user can correct."""


def check_choice(kind: str, value: str, valid) -> None:
    """Raise a UserError naming the valid choices when ``value`` is not one of them."""
    valid = sorted(valid)
    if value not in valid:
        raise UserError(f"unknown {kind} '{value}'; valid choices: {', '.join(valid)}")
