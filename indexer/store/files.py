"""Files the store keeps beside the catalog, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def replacing(target: Path, prefix: str) -> Iterator[BinaryIO]:
    """A file to write that takes `target`'s place when the block ends without error (a
    temporary file in the same folder, made readable like the catalog beside it rather than
    mkstemp's 0600, then renamed); on an error it is removed and `target` is left as it was.
    Making the temporary file can raise OSError before the block runs."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
