"""Zero-shot instance segmentation (ZSI, Zheng et al. CVPR 2021) on torchvision detection parts."""
from .heads import SemanticBoxPredictor, SemanticMaskPredictor
from .model import (
    ZSIConfig,
    ZSIModel,
    create_plain_maskrcnn,
    create_zsi_model,
    get_zsi_config,
    load_zsi_model,
    save_zsi_model,
)
from .roi_heads import ZSIRoIHeads
from .rpn import BackgroundAwareRPNHead

__all__ = ["BackgroundAwareRPNHead", "SemanticBoxPredictor", "SemanticMaskPredictor", "ZSIConfig", "ZSIModel",
           "ZSIRoIHeads", "create_plain_maskrcnn", "create_zsi_model", "get_zsi_config",
           "load_zsi_model", "save_zsi_model"]
