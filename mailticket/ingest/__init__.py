"""Intake and processing of inbound mail."""
