"""What runs docpipe's processes: the supervisor, warm starter, worker and Prefect server."""
