"""Errors that end a training run with one line, importable before MXNet loads."""


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite: the learning rate is too high for this data."""


class PeerFailure(Exception):
    """A collective could not complete because another rank stopped; this rank stops too."""

    def __init__(self, reason: str):
        super().__init__(f"stopped because another rank failed (the launcher's output names it): {reason}")


class Stopped(Exception):
    """A signal (SIGINT, SIGTERM) ended the run at a step boundary, every rank at the same step."""


class DeadlineReached(Exception):
    """Training passed the time it was given (an autotune trial's share); every rank stops together."""
