"""``ProtocolError``: a protocol that cannot run on this input (the message says why; the CLI prints one line).

Its own module so that the argument declarations (``harness.protocols.args``), which the task
checks read, need nothing of the seam (``harness.protocols.base``) that joins the layers.
"""


class ProtocolError(RuntimeError):
    """A protocol that cannot run on this input; the message says why."""
