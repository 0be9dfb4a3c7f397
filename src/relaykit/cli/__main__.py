"""`python -m relaykit.cli`: the relaykit command."""

import sys

from . import main

sys.exit(main())
