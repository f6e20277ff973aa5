"""`python -m clusterdns`."""

from clusterdns.cli import run

run()
