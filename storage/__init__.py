"""The Parquet lake and its DuckDB views: schemas, atomic writer, catalog, queries, compaction.

Storage knows nothing of providers or Prefect; flows hand it rows whose fields are the columns.
"""
