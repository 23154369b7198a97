"""Stage 1, data: source readers, assembly into the manifest, folds, image decoding, the
resized cache, the dataset report and the demo data set. The lowest stage: imports no other."""
