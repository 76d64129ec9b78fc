"""Electron microscopy (ISBI 2012 membrane segmentation): challenge metrics, the U-Net paper's
border weight map and its weighted cross-entropy.

Label convention throughout: a segmentation is an (H, W) integer label map where 0 is membrane
(boundary, "background") and 1..K are cells. Binary ISBI 2012 label images use 1 (or 255) for cell
interior and 0 for membrane.
"""
