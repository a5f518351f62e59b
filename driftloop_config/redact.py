"""Keep credentials out of what people and other systems see: events, logs, state files, argv.

A URI such as ``postgresql+psycopg2://user:secret@db:5432/mlflow`` is shown as
``postgresql+psycopg2://user:***@db:5432/mlflow``; query parameters that carry credentials
(``password=``, ``secret=``, ``token=``, ``X-Amz-Signature=`` …) are masked the same way.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@"
)
_SECRET_PARAM = re.compile(
    r"(?P<name>(?:[A-Za-z0-9_\-]*(?:password|passwd|pwd|secret|token|signature|credential|api[_-]?key))"
    r"\s*=\s*)(?P<value>[^&;\s,]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the password of every URI and every credential parameter masked."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['name']}{MASK}", out)


def redact_obj(obj: Any) -> Any:
    """:func:`redact` applied to every string inside dicts, lists and tuples."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(redact_obj(v) for v in obj)
    return obj
