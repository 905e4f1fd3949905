"""Losses for distilling image-to-image GANs: SRP relation loss, KD baselines, GAN objectives."""
from .gan import GAN_MODES, GANLoss, ImagePool
from .kd import (
    FeatureAdapter,
    attention_map,
    attention_transfer_loss,
    colour_kd_loss,
    feature_kd_loss,
    feature_kd_loss_factorized,
    output_kd_loss,
    perceptual_kd_loss,
    random_corner,
    random_square,
    similarity_preserving_loss,
)
from .relation import semantic_relation_loss

__all__ = [
    "GAN_MODES",
    "FeatureAdapter",
    "GANLoss",
    "ImagePool",
    "attention_map",
    "attention_transfer_loss",
    "colour_kd_loss",
    "feature_kd_loss",
    "feature_kd_loss_factorized",
    "output_kd_loss",
    "perceptual_kd_loss",
    "random_corner",
    "random_square",
    "semantic_relation_loss",
    "similarity_preserving_loss",
]
