"""mailroom: send sales and outbound email through a team's own delivery channel.

The core (channels, outbox store, delivery engine, composition, campaigns) knows
nothing of its edges; the command line, and later the web app and the submission
server, call into it.
"""

__version__ = "0.1.0"
