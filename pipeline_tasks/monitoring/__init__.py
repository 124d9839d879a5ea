"""Monitoring: drift, performance with late labels, the retrain policy.

- ``sources``: what monitoring reads (the served version, the champion, the reference snapshot,
  the prediction log, an operator's CSV/Parquet file).
- ``drift``: the Evidently engine (``check_drift``); ``drift_check``: the drift check of one
  interval and its verdict ``DriftCheck`` (``drift.json``).
- ``performance``: real performance from delayed labels (``performance.json``).
- ``retrain``: the retrain policy and its cool-down.
- ``history``: the MLflow record of the checks.
"""
