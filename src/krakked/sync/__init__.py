"""Jobs that move data into the store; each idempotent and resumable."""
