"""The real SmartEM backend (``smartem-decisions``) on loopback, with an OIDC stand-in for Keycloak.

``RealSmartEM`` runs the backend's migrations, API server and RabbitMQ consumer from the Python 3.12 tool venv
on the machine's PostgreSQL and RabbitMQ (private database, role, vhost and user); ``OidcStandIn`` serves the
realm's JWKS and client-credentials token endpoint so the backend's real token check runs. Used by the
real-backend suite (``tests/smartem``) and by benchmarks.
"""

from testbed.smartem_real.oidc import OidcStandIn
from testbed.smartem_real.services import ServiceUnavailableError
from testbed.smartem_real.supervisor import SCHEMA_ALIGNMENTS, RealSmartEM

__all__ = ["SCHEMA_ALIGNMENTS", "OidcStandIn", "RealSmartEM", "ServiceUnavailableError"]
