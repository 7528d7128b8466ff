"""Campaigns: contact lists and the templates rendered for each contact."""

from mailroom.campaigns.contacts import (
    Contact,
    ContactList,
    RowProblem,
    load_contacts,
    remove_suppressed,
)
from mailroom.campaigns.template import MessageTemplate, Rendered

__all__ = [
    "Contact",
    "ContactList",
    "MessageTemplate",
    "Rendered",
    "RowProblem",
    "load_contacts",
    "remove_suppressed",
]
