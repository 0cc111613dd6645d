"""HTTP edges of the data plane: parse and validate, then hand over to the pipeline."""
