"""Monitoring: drift, performance with late labels, the retrain policy."""
