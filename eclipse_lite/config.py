"""Model configuration and the named presets ``ci``, ``tiny`` and ``base``.

Every script and notebook takes a preset by name; nothing else changes between them::

    cfg = ModelConfig.preset("tiny")
    cfg = ModelConfig.preset("tiny", fusion="a2v", av_layers=(2, 3))   # overrides

``base`` is the paper's shape (CLIP ViT-B/32, 12 layers, width 768, text width 512, 32 frames,
64 text tokens, 512-d ResNet-18 audio features). ``ci`` runs in seconds in tests; ``tiny`` trains
on a CPU in minutes on the bundled benchmark.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

FUSIONS = ("eclipse", "a2v", "joint", "none", "audio_only")
LAYER_ORDERS = ("paper", "released")
A2V_TIME = ("own", "all")
A2V_MODES = ("softmax", "reverse_norm")
AUDIO_ENCODERS = ("cnn", "resnet18", "precomputed")


@dataclass
class ModelConfig:
    """All sizes and switches of an ECLIPSE model.

    Switches (see ``model.py`` and ``attention.py``):
      fusion       "eclipse" (A2V + V2A, Eq. 3-4, default), "a2v" (A2V only, the released code's
                   ``yb_dual=0``), "joint" (one attention over each frame's visual and audio
                   tokens), "none" (video only = CLIP4Clip meanP), "audio_only".
      av_layers    indices of the visual layers that carry an audiovisual block; ``None`` = all
                   (the paper's best setting), ``()`` = none.
      layer_order  "paper": spatial attention first (Eq. 2), then A2V/V2A on its output (Eq. 3-4);
                   "released": A2V/V2A first on the layer input, then spatial attention, as in the
                   authors' ``module_clip.py``. Identical at initialisation (zero projections).
      a2v_time     "own": frame t sees only its own audio token(s) (default, as released);
                   "all": every frame sees all T audio tokens (released ``yb_time_cross_audio=1``).
      a2v_mode     "softmax": frame tokens query audio keys (Eq. 3); "reverse_norm": released
                   ``yb_reverse_norm=1`` (audio queries visual keys, softmax over visual tokens).
    """

    name: str = "custom"
    # vision tower (ViT)
    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    # text tower
    vocab_size: int = 49408
    context_length: int = 64
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    # shared
    embed_dim: int = 512
    mlp_ratio: float = 4.0
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = 100.0
    # video / audio inputs
    num_frames: int = 32
    audio_dim: int = 512
    audio_encoder: str = "resnet18"
    sample_rate: int = 16000
    audio_window_s: float = 10.0
    n_mels: int = 64
    # fusion
    fusion: str = "eclipse"
    av_layers: Optional[Tuple[int, ...]] = None
    layer_order: str = "paper"
    a2v_time: str = "own"
    a2v_mode: str = "softmax"
    # memory
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.av_layers is not None:
            self.av_layers = tuple(int(i) for i in self.av_layers)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value cannot work."""

        def choice(name: str, allowed: Tuple[str, ...]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"ModelConfig.{name}={value!r} is not one of {allowed}")

        choice("fusion", FUSIONS)
        choice("layer_order", LAYER_ORDERS)
        choice("a2v_time", A2V_TIME)
        choice("a2v_mode", A2V_MODES)
        choice("audio_encoder", AUDIO_ENCODERS)
        for name in ("image_size", "patch_size", "vision_width", "vision_layers", "vision_heads",
                     "vocab_size", "context_length", "text_width", "text_layers", "text_heads",
                     "embed_dim", "num_frames", "audio_dim"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"ModelConfig.{name} must be positive, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"ModelConfig.image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}")
        if self.vision_width % self.vision_heads:
            raise ValueError(f"ModelConfig.vision_width={self.vision_width} is not divisible by "
                             f"vision_heads={self.vision_heads}")
        if self.text_width % self.text_heads:
            raise ValueError(f"ModelConfig.text_width={self.text_width} is not divisible by "
                             f"text_heads={self.text_heads}")
        if self.av_layers is not None:
            bad = [i for i in self.av_layers if not 0 <= i < self.vision_layers]
            if bad:
                raise ValueError(f"ModelConfig.av_layers has indices {bad} outside "
                                 f"0..{self.vision_layers - 1}")
        if self.a2v_mode == "reverse_norm" and self.a2v_time == "all":
            raise ValueError("a2v_mode='reverse_norm' only works with one audio token per frame "
                             "(a2v_time='own'), as in the released code")
        for name in ("audio_window_s", "logit_scale_init", "logit_scale_max", "mlp_ratio",
                     "layer_norm_eps"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"ModelConfig.{name} must be a finite number, got {getattr(self, name)}")
        if self.audio_window_s <= 0:
            raise ValueError(f"ModelConfig.audio_window_s must be positive, got {self.audio_window_s}")

    # ------------------------------------------------------------- derived
    @property
    def grid_size(self) -> int:
        """Patches per side of a frame."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2

    @property
    def av_layer_set(self) -> Tuple[int, ...]:
        """Indices of layers with an audiovisual block (empty when fusion has none)."""
        if self.fusion in ("none", "audio_only"):
            return ()
        if self.av_layers is None:
            return tuple(range(self.vision_layers))
        return tuple(sorted(set(self.av_layers)))

    # ------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str, /, **overrides: Any) -> "ModelConfig":
        """A named preset (``ci``, ``tiny``, ``base``), with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        if "name" in overrides:
            raise ValueError(f"ModelConfig.name is the preset's name ({name!r}): choose the preset "
                             f"itself (--preset {overrides['name']}) instead of overriding name")
        values = dict(PRESETS[name])
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)}; known: "
                             f"{[f.name for f in dataclasses.fields(cls)]}")
        values.update(overrides)
        values.setdefault("name", name)
        return cls(**values)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["av_layers"] is not None:
            d["av_layers"] = list(d["av_layers"])
        return d

    def fields_differing_from(self, stored: dict,
                              ignore: Tuple[str, ...] = ("gradient_checkpointing",)) -> List[str]:
        """Names of the fields (``ignore`` aside) where ``stored`` (a ``to_dict()`` read back from
        a run) differs from this config, sorted; a field missing on one side compares as None.
        ``gradient_checkpointing`` changes memory use, not what the model computes."""
        mine = self.to_dict()
        return sorted(k for k in set(mine) | set(stored)
                      if k not in ignore and mine.get(k) != stored.get(k))

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


PRESETS: dict = {
    # seconds, for tests: 2 layers, width 64, 32 px frames cut into 4x4 patches of 8 px.
    "ci": dict(image_size=32, patch_size=8, vision_width=64, vision_layers=2, vision_heads=2,
               context_length=32, text_width=64, text_layers=2, text_heads=2, embed_dim=64,
               num_frames=4, audio_dim=64, audio_encoder="cnn", audio_window_s=2.0, n_mels=32),
    # CPU minutes: 4 layers, width 128, 4 heads, patch 16 on 64 px (the prototype's settings).
    "tiny": dict(image_size=64, patch_size=16, vision_width=128, vision_layers=4, vision_heads=4,
                 context_length=64, text_width=128, text_layers=4, text_heads=4, embed_dim=128,
                 num_frames=8, audio_dim=128, audio_encoder="cnn", audio_window_s=10.0, n_mels=64),
    # the paper: CLIP ViT-B/32, 32 frames, 64 text tokens, precomputed 512-d ResNet-18 audio.
    "base": dict(image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12,
                 context_length=64, text_width=512, text_layers=12, text_heads=8, embed_dim=512,
                 num_frames=32, audio_dim=512, audio_encoder="resnet18", audio_window_s=10.0,
                 n_mels=64),
}

# CLIP's image normalisation (frames are squashed to image_size, scaled to [0, 1], then this).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
