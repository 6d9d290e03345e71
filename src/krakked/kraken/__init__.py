"""Talking to Kraken: signing, rate limits, HTTP, Spot/Futures clients.

No storage, no dlt, no CLI here.
"""
