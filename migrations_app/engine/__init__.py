"""The migration engine: what a worker does once it has claimed a run."""
