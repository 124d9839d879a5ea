"""The deploy control plane: blue/green, canary, records, targets."""
