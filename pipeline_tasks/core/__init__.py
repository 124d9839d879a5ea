"""Configuration, storage, errors, locks and the MLflow adapter: what every layer stands on."""
