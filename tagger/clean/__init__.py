"""Stage 2, label cleaning: pseudo labels, ranked label issues on known cells, the review queue
for annotators and the import of reviewed decisions as a new manifest version."""
