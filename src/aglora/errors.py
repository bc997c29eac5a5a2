"""The one exception type users see.

Every problem caused by input (a missing file, a malformed YAML or JSONL line, an unknown module,
an adapter for another base model, ...) is raised as `AgloraError` with a message that names the
problem and the fix. The CLI prints it as a single line and exits non-zero; a traceback means a bug.
A write that fails for want of room or permission (a full disk, a quota, a read-only disk) is an
`OSError`, not a bug either: `disk_problem` words it as one line with its fix, for the CLI and
for the bench, which reports its cells' failures itself.
"""

from __future__ import annotations

import errno

DISK_ERRORS = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some of your quota",
               errno.EROFS: "choose an --out on a writable disk",
               errno.EACCES: "choose an --out you may write to",
               errno.EPERM: "choose an --out you may write to"}  # errno -> the fix


class AgloraError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


def disk_problem(exc: BaseException) -> str | None:
    """'WHAT writing FILE; FIX' for a write that failed for want of room or permission
    (`DISK_ERRORS`), or None for any other error."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRORS:
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}; {DISK_ERRORS[exc.errno]}"
