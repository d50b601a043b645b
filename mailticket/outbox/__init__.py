"""Outbound mail: templates, composition, the outbox, transports and the sender."""
