"""eclipse-lite: a runnable, readable reproduction of ECLIPSE (Lin et al., ECCV 2022).

    import eclipse_lite as el
    cfg = el.ModelConfig.preset("tiny")
    model = el.ECLIPSE(cfg)
    ids, mask = el.tokenize(["a dog barks"], context_length=cfg.context_length)
"""
from eclipse_lite.config import CLIP_MEAN, CLIP_STD, PRESETS, ModelConfig
from eclipse_lite.losses import infonce_from_logits, symmetric_infonce
from eclipse_lite.metrics import format_metrics, ground_truth_ranks, retrieval_metrics
from eclipse_lite.model import ECLIPSE, AudioVisualBlock, VideoFeatures, masked_mean_pool
from eclipse_lite.tokenizer import count_tokens, tokenize

__all__ = ["ModelConfig", "PRESETS", "CLIP_MEAN", "CLIP_STD", "ECLIPSE", "AudioVisualBlock",
           "VideoFeatures", "masked_mean_pool", "tokenize", "count_tokens", "retrieval_metrics",
           "ground_truth_ranks", "format_metrics", "symmetric_infonce", "infonce_from_logits"]
__version__ = "0.1.0"
