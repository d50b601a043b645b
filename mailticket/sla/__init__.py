"""Service-level time: business-hours calendars and the due times of a ticket's clocks (pure)."""
