"""Read models built from the event log by pure projection functions."""
