"""The legacy synchronous Code Agent: a `while True` loop over sync components and a stdlib HTTP API."""
