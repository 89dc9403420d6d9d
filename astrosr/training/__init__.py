"""Training the super-resolution networks (see `astrosr.training.data` and `astrosr.training.loop`).

`training_images` collects truths, `training_pairs` observes them through the
observation model, and `train` runs the two-stage training with checkpoints
and a model card. Data preparation needs NumPy only; `train` imports
TensorFlow.
"""

from .data import Degradation, TrainingPairs, training_images, training_pairs
from .loop import LOSS_WEIGHTS, MODELS, STAGES, train

__all__ = ["Degradation", "TrainingPairs", "training_images", "training_pairs", "train",
           "STAGES", "MODELS", "LOSS_WEIGHTS"]
