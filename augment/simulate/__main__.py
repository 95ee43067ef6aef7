"""`python -m augment.simulate`: see `augment.simulate` (what it does) and `augment.simulate.cli` (its flags)."""

import sys

from augment.simulate.cli import main

sys.exit(main())
