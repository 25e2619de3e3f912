"""``python -m fw_rollouts.testing``: run the simulator in the foreground."""

import sys

from ._cli import main

sys.exit(main())
