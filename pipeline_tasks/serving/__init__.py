"""The model server: one registered model version behind a small, strict HTTP API.

- ``contract``: the model signature as an input contract (columns, types, nulls, limits).
- ``model``: resolve a version by alias or number, verify its files' sha256, load it.
- ``predlog``: the prediction log, batched Parquet in ``lake/predictions/date=YYYY-MM-DD/model=<name>/``.
- ``app``: the ASGI app (``/predict``, ``/health``, ``/ready``, ``/metadata``, ``/metrics``).
- ``python -m pipeline_tasks.serving --model NAME --ref champion``: run it with uvicorn.
"""
