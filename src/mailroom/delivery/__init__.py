"""Delivery: talking SMTP to a channel's server, inside its limits.

- ``replies``: a server reply as a value, and the one place that classifies it.
- ``limits``: sliding-window rate limits and daily quotas on an injectable clock.
- ``transport``: one reusable SMTP session per channel (aiosmtplib).
- ``probe``: ``channel test``: a full conversation that sends nothing.
- ``engine``: claims due mail from the outbox and sends it, recording every
  outcome.
"""
