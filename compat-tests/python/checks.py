"""Runs named checks against a broker and reports each one.

A client script builds a dict of check name -> function(bootstrap) and calls
`run(checks)`. The script's arguments are the bootstrap address and the names
of the checks to run (all of them when none is named). Each check prints
`ok NAME` or `FAIL NAME: why` (with the traceback on stderr); the exit status
is 1 when any check failed.
"""

import logging
import os
import sys
import time
import traceback
import uuid


class CheckFailed(Exception):
    """A check found the broker doing something it should not."""


def expect(cond, what):
    """Fails the current check with `what` unless `cond` holds."""
    if not cond:
        raise CheckFailed(what)


def expect_eq(got, want, what):
    """Fails the current check unless got == want, showing both."""
    if got != want:
        raise CheckFailed(f"{what}: got {short(got)}, want {short(want)}")


def short(v, limit=300):
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


def unique(prefix):
    """A topic or group name no other check uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def until(deadline_s, what, step):
    """Calls step() until it returns a true value or the deadline passes."""
    end = time.monotonic() + deadline_s
    while True:
        got = step()
        if got:
            return got
        if time.monotonic() > end:
            raise CheckFailed(f"gave up after {deadline_s}s waiting for {what}")


def run(checks):
    if os.environ.get("KASCADE_CHECK_LOG"):
        logging.basicConfig(level=os.environ["KASCADE_CHECK_LOG"], stream=sys.stderr,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    bootstrap = sys.argv[1]
    names = sys.argv[2:] or list(checks)
    failed = []
    for name in names:
        fn = checks.get(name)
        if fn is None:
            print(f"FAIL {name}: no such check (have {', '.join(checks)})", flush=True)
            failed.append(name)
            continue
        start = time.monotonic()
        try:
            fn(bootstrap)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            print(f"--- {name} ---", file=sys.stderr)
            traceback.print_exc()
            failed.append(name)
        else:
            print(f"ok {name} ({time.monotonic() - start:.1f}s)", flush=True)
    if failed:
        print(f"{len(failed)} of {len(names)} checks failed: {' '.join(failed)}", flush=True)
        sys.exit(1)
