"""The Arrow ray store: Parquet schema and manifest, parallel ingest, streaming reader."""
