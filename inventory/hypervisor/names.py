"""Names of files and volumes the portal creates on hosts, made safe by the portal itself.

VM names, disk targets and restore names end up in file and volume names. libvirt refuses some
characters in some of them today, but what a file is called must not depend on that: every name built
from them goes through `safe_file_name`, and the one place that turns a name into a volume definition
checks it with `check_volume_name`.
"""

from __future__ import annotations

import re

from .errors import OperationFailed

MAX_NAME = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_file_name(*parts: object) -> str:
    """Join the parts with '-' into one file-name component of letters, digits and . _ + - only."""
    text = "-".join(str(p) for p in parts if str(p) != "")
    text = _UNSAFE.sub("_", text).lstrip(".-_") or "unnamed"
    return text[:MAX_NAME]


def check_volume_name(name: str) -> str:
    """A volume name must be one plain path component: no '/', no NUL or control characters, not '.'/'..'."""
    if not name or name in (".", "..") or "/" in name or re.search(r"[\x00-\x1f\x7f]", name) or len(name) > 255:
        raise OperationFailed(f"Refusing to create a volume named {name!r}: not a single plain file name.")
    return name
