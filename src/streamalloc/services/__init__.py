"""Downstream services on faust-streaming: channel-sync and routing (docs/architecture.md).

The pure parts (coalesce.py, fulfilment.py, the webhook signing in webhooks.py) know
nothing of faust; faust is reached only through faust_app.py.
"""
