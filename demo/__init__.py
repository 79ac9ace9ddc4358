"""Mask2Former demo: run a model on images, folders, videos or a webcam and draw its predictions.

``python demo/demo.py --help`` for the command line; :class:`demo.predictor.VisualizationDemo`
for use from Python.
"""
