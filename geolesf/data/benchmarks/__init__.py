"""Loaders of the computer-vision benchmarks geolesf evaluates on (one dataset per module).

Each loader reads the dataset's own on-disk layout (as distributed by its authors) and yields
``dict(image=uint8 (H, W, 3) array, mask=int64 (H, W) array with 255 = ignore, ...)`` for
segmentation, or images with boxes for detection. Nothing is downloaded at load time; see
``geolesf data info NAME`` for where each dataset comes from.
"""
