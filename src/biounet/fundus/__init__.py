"""Fundus (retinal photograph) optic disc and cup: post-processing of predicted masks
(``postprocess``) and clinical measures such as cup-to-disc ratios and ISNT rim widths (``cdr``)."""
