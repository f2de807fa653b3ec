"""otrs_sim - a standalone OTRS/Znuny GenericInterface REST simulator (stdlib only).

It imitates the stock ``GenericTicketConnectorREST`` web service of Znuny 6.5 closely
enough that clients written against it work against the real thing: same routes,
same quirks of parameter parsing, business errors inside HTTP 200, the same header
framing and value types.  On top of that it has fault knobs (latency, failures,
dropped connections, HTML error pages), a webhook sender, control endpoints under
``/_sim/`` and an HTML page at ``/`` where a person plays the OTRS agent.

Run it with ``python -m otrs_sim --port 8089`` or, in tests::

    from otrs_sim import SimConfig, start_server
    sim = start_server(port=0, config=SimConfig(session_ttl=1))
    ...  # talk to sim.base_url
    sim.shutdown()

It imports nothing from the OTRS Bridge project, and the project never imports it
except in tests and the demo wiring.
"""

from .config import SimConfig
from .server import SimServer, start_server

__all__ = ["SimConfig", "SimServer", "start_server"]
