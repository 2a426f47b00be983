"""schemathesis hooks for tests/test_schemathesis.py (loaded by the schemathesis CLI).

- No request leaves this machine: a generated rollout schedule may name confirm_rollout or
  confirm_promotion URLs, which the gateway's controller would POST to; they are dropped before
  the call (every phase runs this hook).
- Every call is written to the file named by CANARYGATE_ST_CALLS (phase, method, path
  template, status), so the test can show that every operation was called and with which answers.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("schedule"), dict):
        for key in ("confirm_rollout", "confirm_promotion"):
            body["schedule"].pop(key, None)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    path = os.environ.get("CANARYGATE_ST_CALLS")
    if path:
        with open(path, "a") as out:
            meta = getattr(case, "meta", None)
            phase = meta.phase.name.value if meta is not None else "?"
            out.write(f"{phase} {case.method} {case.path} {response.status_code}\n")
