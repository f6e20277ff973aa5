"""clusterdns: Kubernetes cluster DNS and service environment variables, from plain manifests.

The public surface is the command line (`clusterdns.cli.main`) and the pure core: manifests ->
registry -> records -> answers.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
