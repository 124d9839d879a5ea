"""The model steps: train, evaluate, metrics, the registry."""
