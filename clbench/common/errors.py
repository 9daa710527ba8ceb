"""The one error type for bad input anywhere in clbench.

It lives in the lowest layer so that scenarios, strategies and the app can all raise it;
the CLI turns it into one line on stderr and exit code 2.
"""


class InputError(ValueError):
    """Bad input from the user: a missing dataset, a corrupt file, an unknown name, a bad value."""
