"""Models and the objective: the paper's networks (eqs. 3, 4, 9, 12) as equinox Modules with its field
names, the losses, the regulariser R(ξ) of Theorem 11 (eq. 13), the objective F(ξ) = E L + κR (eqs. 6,
7, 16), training with optax (with checkpoints along the way), and BatchNorm statistics re-estimated at
any parameter point (`recompute_batch_stats`)."""

from ._batch_stats import recompute_batch_stats as recompute_batch_stats
from ._losses import (
    LOSSES as LOSSES,
    LossFn as LossFn,
    get_loss as get_loss,
    logistic as logistic,
    mse as mse,
    softmax_cross_entropy as softmax_cross_entropy,
)
from ._models import (
    AbstractSkipLayers as AbstractSkipLayers,
    Linear as Linear,
    NoSkipNet as NoSkipNet,
    ResidualLinear as ResidualLinear,
    SkipNet as SkipNet,
    TwoLayer as TwoLayer,
    embed_two_layer as embed_two_layer,
    relu as relu,
    relu_net as relu_net,
)
from ._objective import (
    Objective as Objective,
    check_data as check_data,
    data_loss as data_loss,
    objective as objective,
    objective_fn as objective_fn,
)
from ._resnet import (
    DigitsResNet as DigitsResNet,
    ResidualBlock as ResidualBlock,
    batch_stats_loss as batch_stats_loss,
    digits_images as digits_images,
    full_batch_loss as full_batch_loss,
    train_digits_resnet as train_digits_resnet,
    trainable as trainable,
)
from ._regularizer import regularizer as regularizer
from ._train import FitResult as FitResult, fit as fit
