"""Where the sandbox's zygote program (``_zygote.py``, the process that forks one child per sample) is: on this
machine, and where each sandbox backend binds it read-only (`mel.verify.sandbox`, `mel.verify.docker_backend`)."""
from __future__ import annotations

import os

ZYGOTE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_zygote.py")
SANDBOX_ZYGOTE = "/opt/mel/_zygote.py"  # inside a bubblewrap or Docker sandbox
