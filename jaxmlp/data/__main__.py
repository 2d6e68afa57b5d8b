"""``python -m jaxmlp.data``: the same command as ``jaxmlp data``."""

import sys

from jaxmlp.data._command import main

sys.exit(main())
