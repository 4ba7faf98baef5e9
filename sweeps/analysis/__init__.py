"""Judging finished trials from the database: diagnosis, reranking, verification, reruns, export
of the best model, and the report."""
