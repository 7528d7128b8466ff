"""Delivery channels: their kinds and presets, and how a message picks one."""
