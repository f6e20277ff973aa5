"""`python -m clusterdns`."""

import sys

from clusterdns.cli import main

sys.exit(main())
