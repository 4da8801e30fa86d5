"""A Semphony-compatible control server over the SEM simulator, for tests and the demo."""

from testbed.semphony_server.app import create_app
from testbed.semphony_server.server import DEFAULT_API_KEY, SemphonyServer
from testbed.semphony_server.server_thread import UvicornThread

__all__ = ["DEFAULT_API_KEY", "SemphonyServer", "UvicornThread", "create_app"]
