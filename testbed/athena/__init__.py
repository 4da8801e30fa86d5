"""An Athena Decision Service stand-in that records decisions, for tests and the demo."""

from testbed.athena.app import AthenaStore, create_app
from testbed.athena.server import AthenaServer

__all__ = ["AthenaServer", "AthenaStore", "create_app"]
