"""Errors a user can fix. The CLI prints them as one line and exits non-zero, without a traceback."""


class CorrectsweepError(Exception):
    """Something wrong with the user's input; the message names it and says how to fix it."""


class SpecError(CorrectsweepError):
    """An invalid sweep spec or override."""


class DataError(CorrectsweepError):
    """A dataset that cannot be loaded: missing files, corrupt images, bad labels, empty classes."""


class UntrustedCode(SpecError):
    """A run directory's record names code (a package.module:Class) that this process has not imported."""
