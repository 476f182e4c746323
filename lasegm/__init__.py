"""lasegm: left-atrium segmentation of cardiac MRI (Decathlon Task02_Heart) with 2D smp models."""

__version__ = "0.1.0"


class LasegmError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""
