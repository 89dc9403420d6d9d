"""Training the super-resolution networks (see `astrosr.training.data` and `astrosr.training.loop`).

`training_images` collects truths (of the classes in `SYNTHETIC_CLASSES`,
labelled with `ImageLabel`), `training_pairs` observes them through the
observation model, `hold_out` and `leave_one_out` split them by whole image,
and `train` runs the two-stage training with checkpoints and a model card.
Data preparation needs NumPy only; `train` imports TensorFlow.
"""

from .data import (SYNTHETIC_CLASSES, Degradation, ImageLabel, TrainingPairs, hold_out,
                   leave_one_out, training_images, training_pairs)
from .loop import LOSS_WEIGHTS, MODELS, STAGES, train

__all__ = ["Degradation", "TrainingPairs", "training_images", "training_pairs", "train",
           "STAGES", "MODELS", "LOSS_WEIGHTS", "ImageLabel", "SYNTHETIC_CLASSES", "hold_out",
           "leave_one_out"]
