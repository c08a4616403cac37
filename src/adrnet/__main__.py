"""``python -m adrnet``: the ``adrnet`` command without its script on PATH."""

import sys

from adrnet.cli import main

sys.exit(main())
