"""silo: what runs inside one trial of an iterative-pruning study (pure PyTorch).

Schedules, pruning, models, data, the training of one run, and a plain sequential driver
for a chain of cycles. It imports neither ray nor optuna and knows nothing of arms.
"""

__version__ = "0.1.0"
