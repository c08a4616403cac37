"""``python -m adrnet.cli``: the form torchrun launches (``torchrun ... -m adrnet.cli train``)."""

import sys

from adrnet.cli import main

sys.exit(main())
