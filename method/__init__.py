"""SynFoC, the method of the paper (Ma et al., CVPR 2025), as pure tensor functions.

Read in this order: :mod:`method.step` (one iteration up to the loss, ``synfoc_step``),
:mod:`method.smc` (Self-Mutual Confidence, the ensemble and its pseudo-labels),
:mod:`method.copy_paste` (intermediate samples), :mod:`method.losses` (supervised, masked
unsupervised, Consensus-Divergence), :mod:`method.schedules` (lambda(t)), and the types and
switches in :mod:`method.batches` and :mod:`method.config`.

Nothing here reads files, owns an optimizer, updates a teacher or logs: the training engine
(:mod:`engine`) does that around the step. The package imports only torch.
"""
