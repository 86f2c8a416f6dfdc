"""``SubmissionError``: an encoder, weights file or submission that cannot be scored.

Raised by the checks, the weights reader, the public-encoder routes and the
registration; the CLI prints its message as one line and exits 2.
"""


class SubmissionError(ValueError):
    """A submission that cannot be scored; the message says what to fix."""
