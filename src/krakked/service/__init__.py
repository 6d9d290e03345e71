"""The long-running service: the 15-minute OHLC ingestor on a schedule (``scheduler``) behind
an HTTP API with its status page (``app``).

Nothing imports this package but entry points; it sits beside ``krakked.cli`` in the layers.
"""
