"""The package's error classes: errors whose message is meant for the user (no traceback).

Every layer raises them (config, structure, io, model, energy, tasks); ``parallel.run_or_abort`` prints
them without a traceback and ends the job with status 2.
"""


class UserInputError(Exception):
    """An error in what the user gave (input file, structure, model): reported without traceback."""


class CollectiveInputError(UserInputError):
    """A user error detected on rank 0 and raised on every rank at the same point."""
