"""One exception type for every problem caused by the caller's input.

The CLI turns it into a one-line message and a non-zero exit; library users can catch it.
"""


class InputError(ValueError):
    """Bad input from the user: a missing file, a wrong shape, an unknown class name, ..."""
