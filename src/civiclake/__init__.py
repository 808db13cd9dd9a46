"""civiclake: public open data into a lake, Iceberg tables and a warehouse, with Prefect."""

__version__ = "0.1.0"
