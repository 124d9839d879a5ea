"""Batch scoring: a table of any size streamed through one registered model version.

``reader`` streams the source in record batches (files through pyarrow, SQL in chunks) after its
columns are checked against the model's inputs; ``rows`` sorts each chunk's rows into scorable and
rejected (with a reason); ``predictor`` computes a chunk's predictions (bit for bit the model's
own, faster for the histogram gradient boosting pipelines the package trains); ``outputs`` stages
the scores, the rejects and the prediction-log rows and publishes them at once; ``batch`` runs it
for one data interval; ``standalone`` runs it as a process of its own (``mlops batch-score``);
``sql_export`` copies a published partition into a SQL table. Nothing here imports Airflow.
"""
