"""Training losses shared by more than one method (no model knowledge, no Lightning).

A method package never imports another method package, so a loss two methods use lives here:
the cross-pixel affinity machinery and the label-reassign loss of the single-stage WSSS method
are also what the weakly-supervised dense segmenter (points, scribbles, boxes, noisy masks) uses.
"""
