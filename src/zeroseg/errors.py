"""Errors that reach the user as one line on stderr (exit code 2)."""


class ZerosegError(Exception):
    """Bad input: a missing or corrupt file, an empty label set, a wrong checkpoint.

    The command-line tool prints ``zeroseg: error: <message>`` and exits with code 2.
    """
