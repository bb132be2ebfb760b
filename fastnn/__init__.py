"""fastnn: train dense neural networks fast on a CPU with hand-written Numba kernels.

>>> import fastnn as fnn
>>> model = fnn.Sequential(fnn.Linear(784, 256, init="he_normal"), fnn.ReLU(),
...                        fnn.Linear(256, 10), seed=0)
>>> model.compile(optimizer=fnn.SGD(lr=0.1, momentum=0.9), loss="cross_entropy",
...               metrics=["accuracy"])
>>> history = model.fit(x, y, epochs=5, batch_size=128)
"""
# First: the thread-pool defaults must be in place before Numba starts its OpenMP pool.
from . import threads as _threads

_threads.apply_defaults()

from .backends import BackendUnavailableError, available_backends, get_backend, set_backend, use_backend
from .attention import scaled_dot_product_attention, scaled_dot_product_attention_backward
from .callbacks import (Callback, CSVLogger, EarlyStopping, LearningRateScheduler,
                        ModelCheckpoint)
from .data import batches
from .datasets import DatasetNotFoundError, load_mnist
from .init import INITIALIZERS, manual_seed
from .kernels.activations import ACTIVATIONS
from .dropout import Dropout
from .layers import (ELU, GELU, Activation, Dense, Gaussian, Identity, LeakyReLU, Linear,
                     PiecewiseLinear, ReLU, Sigmoid, Softmax, Softplus, Step, Tanh)
from .losses import LOSSES, BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Loss, MSELoss
from .model import Sequential
from .norm import BatchNorm1d, LayerNorm
from .module import Module, Parameter
from .plotting import plot_history
from .optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, RMSprop, weight_decay_groups
from .schedules import (SCHEDULES, CosineAnnealingLR, LinearWarmup, LRSchedule,
                        ReduceLROnPlateau, StepLR)
from .sequence import (Embedding, FirstToken, MeanPool, PositionalEmbedding, Residual,
                       SinusoidalPositionalEncoding)
from .serialization import ModelFileError, load_model as load
from .threads import get_num_threads, set_num_threads, thread_info
from .training import History, TrainingDivergedError
from .transformer import MultiHeadAttention, TransformerEncoderLayer
from .warmup import warmup

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "INITIALIZERS", "LOSSES", "OPTIMIZERS", "Activation", "BatchNorm1d",
    "Dropout", "LayerNorm",
    "BCELoss", "BCEWithLogitsLoss", "BackendUnavailableError", "CrossEntropyLoss", "DatasetNotFoundError", "Dense", "ELU", "GELU",
    "Gaussian", "History", "Identity", "LeakyReLU", "Linear", "Loss", "MSELoss",
    "ModelFileError", "Module", "Optimizer", "Parameter", "PiecewiseLinear", "ReLU", "SGD",
    "Sequential", "Sigmoid", "Softmax", "Softplus", "Step", "Tanh", "TrainingDivergedError",
    "available_backends", "batches", "get_backend", "get_num_threads", "load", "load_mnist",
    "manual_seed", "set_backend", "set_num_threads", "thread_info", "use_backend",
    # optimisers and learning-rate schedules
    "Adam", "AdamW", "RMSprop", "weight_decay_groups", "SCHEDULES", "LRSchedule", "StepLR",
    "CosineAnnealingLR", "LinearWarmup", "ReduceLROnPlateau",
    # sequence layers
    "Embedding", "PositionalEmbedding", "SinusoidalPositionalEncoding", "MeanPool",
    "FirstToken", "Residual",
    # training callbacks
    "Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger", "LearningRateScheduler",
    # pictures (matplotlib, imported when called)
    "plot_history",
    # attention
    "MultiHeadAttention", "TransformerEncoderLayer", "scaled_dot_product_attention",
    "scaled_dot_product_attention_backward",
    # compile the kernels ahead of time (fastnn warmup)
    "warmup",
]
