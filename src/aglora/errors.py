"""The one exception type users see.

Every problem caused by input (a missing file, a malformed YAML or JSONL line, an unknown module,
an adapter for another base model, ...) is raised as `AgloraError` with a message that names the
problem and the fix. The CLI prints it as a single line and exits non-zero; a traceback means a bug.
"""


class AgloraError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""
