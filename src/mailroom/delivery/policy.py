"""When to try again: exponential backoff with jitter, and when to give up.

Postfix's defaults are the model (``minimal_backoff_time`` 300 s doubling up to
``maximal_backoff_time`` 4000 s, ``maximal_queue_lifetime`` 5 days); mailroom
starts sooner because a sales message is worth less the later it arrives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(slots=True)
class RetryPolicy:
    first_delay: float = 60.0
    max_delay: float = 4 * 3600.0
    lifetime: timedelta = timedelta(days=5)
    # Throttling pauses the channel, not the message: first pause and its cap.
    first_pause: float = 60.0
    max_pause: float = 1800.0
    rng: random.Random = field(default_factory=random.Random)

    def retry_delay(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``; full jitter on the top half."""
        ceiling = min(self.max_delay, self.first_delay * 2 ** max(0, attempts - 1))
        return float(ceiling * self.rng.uniform(0.5, 1.0))

    def pause(self, strikes: int) -> float:
        """How long a channel rests after ``strikes`` throttling replies in a row."""
        return float(min(self.max_pause, self.first_pause * 2 ** max(0, strikes - 1)))

    def expired(self, created_at: datetime, now: datetime) -> bool:
        return now - created_at >= self.lifetime
