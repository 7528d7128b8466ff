"""Delivery: talking SMTP to a channel's server, inside its limits.

- ``replies``: a server reply as a value, and the one place that classifies it.
- ``limits``: sliding-window rate limits and daily quotas on an injectable clock.
- ``policy``: when to try again, and when to give up.
- ``transport``: one reusable SMTP session (aiosmtplib), with ``pipelining``
  (RFC 2920) when the server offers it.
- ``probe``: ``channel test``: a full conversation that sends nothing, kept
  in a ``transcript`` with credentials blanked out; ``diagnoses`` turns a
  failure into one line, and ``closing`` releases a socket within a bound.
- ``engine``: the worker's loop over channels with due mail.
- ``runner``: one channel's delivery: its sessions, each message's round.
- ``link``: what one session worker holds between messages.
- ``reactions``: a channel stopping early (throttled, out of quota,
  disconnected, unreachable, at its limit), and what its mail does then.
- ``outcome``: what a round of replies means for a message and its recipients.
- ``writer``: the group commit of outcomes.
"""
