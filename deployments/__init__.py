"""Prefect deployments: the work pool, its queues, and docpipe's deployments."""
