"""Training package: prepare face crops, train VGG16, export int8 TFLite, evaluate.

It reuses the runtime's detector and ``realtime.crop`` so training and use see the same crops.
"""
