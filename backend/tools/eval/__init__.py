"""``touchup eval``: a reproducible benchmark of region refinement.

Cases are quadruples (input, selection, reference or none, ground truth) built from photos that
scikit-image ships, or read from a user's folder. Each case is refined through the product's own
job path and by simple baselines, scored with metrics that a retoucher cares about (nothing
outside the selection changes, the region gets closer to the truth, no visible seam or colour
step at the edge), and summarised as tables, CSV/JSON and pictures.
"""
