"""The MLOps pipeline library: plain Python stages that the Airflow DAGs call.

Nothing here imports Airflow. Heavy libraries (pandas, sklearn, mlflow, great_expectations,
evidently) are imported inside the stage that needs them, so importing this package is cheap.
"""

__version__ = "0.1.0"
