"""``python -m biounet`` (and ``torchrun -m biounet``)."""

from __future__ import annotations

import sys

from biounet.cli import main

sys.exit(main())
