"""The data steps: ingest, validate, version."""
