"""lasegm: left-atrium segmentation of cardiac MRI (Decathlon Task02_Heart) with 2D smp models."""

import os

__version__ = "0.1.0"

# nothing is fetched at run time: albumentations would otherwise look up its latest version online at import
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


class LasegmError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""
