"""Errors a user can act on. Each carries one line naming the problem and what to do."""


class RelayError(Exception):
    """A problem with the user's input or environment, reported as a single line."""


class SpecError(RelayError):
    """The task spec or a run parameter is invalid."""


class DataValidationError(RelayError):
    """The dataset failed its expectation suite; nothing downstream may run."""


class GateFailed(RelayError):
    """The optimized model did not pass the precision gate; it must not be registered or served."""


class ServingError(RelayError):
    """The model server could not be started, reached or updated."""
