"""One module per book page: the analysis behind notebook ``NN_name`` lives in ``pNN_name``.

A notebook keeps what its reader checks -- the paper's claim, the thresholds fixed before the
run, the figure and the verdict calls -- and imports its page module for the arithmetic that
turns measured maps into tables, numbers and the per-unit effects the verdicts are decided on.
"""
