"""``python -m fw_rollouts``: the ``fw-rollouts`` command."""

import sys

from .cli import main

sys.exit(main())
