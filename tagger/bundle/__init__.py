"""The model bundle: its files (`model_bundle`), the MLflow edge (`registry`, the only place in
`tagger` that imports MLflow) and, above both, where a model comes from (`resolve`)."""
