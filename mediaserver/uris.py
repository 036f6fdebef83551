"""Where a URI endpoint's `file://` URI points, kept inside the directory the operator allows.

KMS takes a URI that is not a URI (no scheme) as a path under its `defaultPath`; so does this
server, under its recordings directory. Unlike KMS it refuses any file outside that directory,
symbolic links followed, so a client cannot make the server write (or read) anywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import Code, KurentoError


def file_path(uri: str, root: Path) -> Path:
    """The file `uri` names, resolved; refused (40107) outside `root` or for another scheme."""
    if not isinstance(uri, str) or not uri or "\x00" in uri:
        raise KurentoError(Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR, "'uri' must be a file URI")
    parts = urlsplit(uri)
    if not parts.scheme:
        path = root / unquote(uri)
    elif parts.scheme == "file" and parts.netloc in ("", "localhost"):
        path = Path(unquote(parts.path))
    else:
        raise KurentoError(
            Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR,
            f"URI '{uri}' is not supported here: a file:// URI, or a path in this server's "
            "directory, is",
        )
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real == real_root or not real.is_relative_to(real_root):
        raise KurentoError(
            Code.MEDIA_OBJECT_ILLEGAL_PARAM_ERROR,
            f"URI '{uri}' is outside this server's directory {real_root}",
        )
    return real
