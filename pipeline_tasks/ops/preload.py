"""The heavy libraries the stages use, imported in one place so Airflow can load them once.

A task process that starts cold spends seconds importing pandas, scikit-learn, MLflow, Great
Expectations and Evidently before it does any work (about 4 s each for scikit-learn, MLflow and
Evidently, 9 s for Great Expectations on a 2-core machine), and every task of every run paid it
again. The embedded profile sets ``[scheduler] mp_start_method = forkserver`` and
``mp_forkserver_preload`` to this module (see ``airflow.cfg.example``): the LocalExecutor's
forkserver imports it once, and the workers and the task processes they fork inherit the loaded
modules copy-on-write.

Only third-party libraries are listed: the pipeline's own modules are light and are imported
fresh by each task, so an edit to ``pipeline_tasks`` takes effect at the next task without a
scheduler restart. Upgrading one of the libraries below does need a scheduler restart. Importing
this module touches no store and no service. DAG files must not import it: parsing stays light
(see the DAG integrity tests).
"""

# ruff: noqa: F401
import evidently
import evidently.legacy.calculations.stattests.registry
import evidently.metrics
import evidently.presets
import fsspec
import great_expectations
import great_expectations.expectations
import matplotlib.figure
import mlflow
import mlflow.models
import mlflow.sklearn
import mlflow.store.model_registry.sqlalchemy_store
import mlflow.store.tracking.sqlalchemy_store
import mlflow.tracking
import numpy
import pandas
import pyarrow.parquet
import sklearn.compose
import sklearn.dummy
import sklearn.ensemble
import sklearn.impute
import sklearn.inspection
import sklearn.metrics
import sklearn.model_selection
import sklearn.pipeline
import sklearn.preprocessing
import skops.io
