"""Stage 3, training: the timm model, losses, repeat-factor sampling, the training dataset,
checkpoints and the loop. Reads the manifest; knows nothing of calibration or bundles."""
