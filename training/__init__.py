"""Training package: prepare face crops, train VGG16, export int8 TFLite, evaluate.

It reuses the runtime's detector and ``realtime.crop`` so training and use see the same crops.
"""

import os

# TensorFlow's C++ info and warning lines ("oneDNN custom operations are on", ...) drown the training
# log; its errors still show. Set before any module of the package imports Keras (and so TensorFlow).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
