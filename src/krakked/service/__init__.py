"""The long-running service: the ingestion scheduler and the HTTP API with its status page."""
