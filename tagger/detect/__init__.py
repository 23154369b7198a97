"""Stage 4, detection and fusion: detectors for small objects (torchvision SSD, optional
Ultralytics YOLO), tiling, and per-tag fusion of box evidence with classifier scores."""
