"""``python -m jaxmlp``: the same as the ``jaxmlp`` command."""

import sys

from jaxmlp.cli import main

sys.exit(main())
