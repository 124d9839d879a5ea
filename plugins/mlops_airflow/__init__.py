"""Airflow-side glue of the MLOps pipeline: turns an Airflow task context into plain values.

Imports nothing heavy, so DAG files can import it at parse time.
"""
