"""Loading and saving weights: Hugging Face CLIP, the authors' released ECLIPSE checkpoints, ours.

- :func:`load_clip` — ``ECLIPSE.from_clip``: a hub id or a local ``save_pretrained`` directory of
  ``transformers.CLIPModel`` (``model.safetensors`` or ``pytorch_model.bin``, read with
  ``weights_only=True``); names mapped by :func:`eclipse_lite.clip.hf_key_map`.
- :func:`load_official` — ``ECLIPSE.from_official``: CLIP4Clip-style names of GenjiB/ECLIPSE
  (``clip.visual.transformer.resblocks.{i}.vis_audio_attn.in_proj_weight`` …); sizes read off the
  tensors' shapes as OpenAI's ``build_model`` does (heads = width // 64).
- :func:`save_pretrained` / :func:`load_pretrained` — our own format: ``config.json`` +
  ``model.safetensors``, written atomically.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Dict, Mapping, Tuple

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from eclipse_lite.clip import hf_key_map, resize_image_positions, resize_text_positions
from eclipse_lite.config import ModelConfig
from eclipse_lite.files import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


# ------------------------------------------------------------------ generic I/O
def read_state_dict(path: Path) -> Dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch pickle (``weights_only=True``)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return obj


def atomic_save_safetensors(tensors: Dict[str, Tensor], path: Path, metadata=None) -> None:
    """Write tensors (detached, contiguous, on the CPU) as one safetensors file, atomically."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)


def _assign(model, ours: Dict[str, Tensor], what: str) -> None:
    """Copy tensors into the model, checking every name and shape."""
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    unknown = sorted(set(ours) - set(params))
    if unknown:
        raise KeyError(f"{what}: no parameter named {unknown[:5]} in the model")
    with torch.no_grad():
        for name, value in ours.items():
            target = params[name]
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(f"{what}: {name} has shape {tuple(value.shape)} in the checkpoint "
                                 f"but {tuple(target.shape)} in the model")
            target.copy_(value.to(target.dtype))


def _resize_positions(ours: Dict[str, Tensor], cfg: ModelConfig) -> None:
    ours["visual.position_embedding"] = resize_image_positions(ours["visual.position_embedding"],
                                                               cfg.num_patches)
    ours["text.position_embedding"] = resize_text_positions(ours["text.position_embedding"],
                                                            cfg.context_length)


# ------------------------------------------------------------------ Hugging Face CLIP
def resolve_clip_dir(name_or_path) -> Path:
    """A local directory holding config.json + weights, for a path or a hub id (cache first)."""
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json: save a CLIP model there with "
                                    "transformers' CLIPModel.save_pretrained(dir)")
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; from_clip wants a directory written by save_pretrained")
    name = str(name_or_path)
    advice = (f"could not load CLIP {name!r}: it is not a local directory and not in the Hugging "
              f"Face cache, and it could not be downloaded (no network?). On a machine with network "
              f"run `python -c \"from transformers import CLIPModel; CLIPModel.from_pretrained("
              f"'{name}').save_pretrained('clip-dir')\"` (or `huggingface-cli download {name} "
              f"--local-dir clip-dir`), copy clip-dir here and call "
              f"ECLIPSE.from_clip('clip-dir').")
    try:
        # huggingface_hub only to download (it comes with transformers)
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - transformers depends on it
        raise FileNotFoundError(advice) from exc
    patterns = ["config.json", "*.safetensors", "pytorch_model.bin"]
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise FileNotFoundError(advice + " (HF_HUB_OFFLINE is set)")
    try:
        return Path(snapshot_download(name, allow_patterns=patterns, etag_timeout=10))
    except Exception as exc:
        raise FileNotFoundError(advice + f" [{type(exc).__name__}: {exc}]") from None


def config_from_hf(hf: Mapping, **overrides) -> ModelConfig:
    """A :class:`ModelConfig` with the sizes of a Hugging Face ``CLIPConfig`` dict."""
    v, t = hf.get("vision_config", {}), hf.get("text_config", {})
    vw, tw = v.get("hidden_size", 768), t.get("hidden_size", 512)
    v_ratio = v.get("intermediate_size", 4 * vw) / vw
    t_ratio = t.get("intermediate_size", 4 * tw) / tw
    if v_ratio != t_ratio:
        raise ValueError(f"vision and text MLP ratios differ ({v_ratio} vs {t_ratio}); "
                         "ModelConfig has one mlp_ratio")
    act = v.get("hidden_act", "quick_gelu")
    values = dict(
        image_size=v.get("image_size", 224), patch_size=v.get("patch_size", 32), vision_width=vw,
        vision_layers=v.get("num_hidden_layers", 12), vision_heads=v.get("num_attention_heads", 12),
        vocab_size=t.get("vocab_size", 49408), text_width=tw,
        text_layers=t.get("num_hidden_layers", 12), text_heads=t.get("num_attention_heads", 8),
        embed_dim=hf.get("projection_dim", 512), mlp_ratio=v_ratio, hidden_act=act,
        layer_norm_eps=v.get("layer_norm_eps", 1e-5),
        logit_scale_init=hf.get("logit_scale_init_value", math.log(1 / 0.07)),
    )
    base = ModelConfig.preset("base").to_dict()
    base.update(values)
    base["name"] = "from_clip"
    base.update(overrides)
    return ModelConfig.from_dict(base)


def load_clip(cls, name_or_path, **overrides):
    """``ECLIPSE.from_clip``: see the module docstring."""
    directory = resolve_clip_dir(name_or_path)
    hf_cfg = json.loads((directory / "config.json").read_text())
    weights = next((directory / f for f in WEIGHT_FILES if (directory / f).exists()), None)
    if weights is None:
        raise FileNotFoundError(f"{directory} has none of {WEIGHT_FILES}")
    state = read_state_dict(weights)
    state = {k[len("clip_model."):] if k.startswith("clip_model.") else k: v for k, v in state.items()}
    ckpt_text_len = state["text_model.embeddings.position_embedding.weight"].shape[0]
    overrides.setdefault("context_length", min(64, ckpt_text_len))
    cfg = config_from_hf(hf_cfg, **overrides)
    model = cls(cfg)
    mapping = hf_key_map(cfg)
    missing = [hf for hf in mapping.values() if hf not in state]
    if missing:
        raise KeyError(f"{weights}: missing CLIP tensors {missing[:5]} (is this a CLIPModel checkpoint?)")
    ours = {name: state[hf] for name, hf in mapping.items()}
    _resize_positions(ours, cfg)
    _assign(model, ours, str(weights))
    model.reset_av_blocks()
    return model


# ------------------------------------------------------------------ the authors' checkpoints
OFFICIAL_FLAGS = {  # their command-line flag -> (our field, value when the flag is 0, when 1)
    "yb_dual": ("fusion", "a2v", "eclipse"),
    "yb_reverse_norm": ("a2v_mode", "softmax", "reverse_norm"),
    "yb_time_cross_audio": ("a2v_time", "own", "all"),
}
_AV_NAMES = {"vis_audio_ln_1": "norm_video", "audio_vis_ln_1": "norm_audio",
             "vis_audio_attn": "a2v_attn", "audio_vis_attn": "v2a_attn",
             "vis_audio_fc": "a2v_proj", "audio_vis_fc": "v2a_proj"}
_BLOCK_NAMES = {"ln_1": "ln_1", "ln_2": "ln_2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


def _strip_prefixes(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    out = {}
    for k, v in state.items():
        k = k[len("module."):] if k.startswith("module.") else k
        k = k[len("clip."):] if k.startswith("clip.") else k
        out[k] = v
    return out


def _count_layers(state: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.attn\.in_proj_weight$")
    found = [int(m.group(1)) for k in state if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def config_from_official(state: Mapping[str, Tensor], **overrides) -> ModelConfig:
    """Sizes read off an official checkpoint's tensor shapes (OpenAI ``build_model`` rules)."""
    required = ["visual.conv1.weight", "visual.positional_embedding", "text_projection",
                "positional_embedding", "token_embedding.weight", "ln_final.weight"]
    missing = [k for k in required if k not in state]
    if missing:
        raise KeyError(f"not an ECLIPSE/CLIP4Clip checkpoint: missing {missing} "
                       "(expected names like clip.visual.conv1.weight)")
    vision_width = state["visual.conv1.weight"].shape[0]
    patch = state["visual.conv1.weight"].shape[-1]
    grid = math.isqrt(state["visual.positional_embedding"].shape[0] - 1)
    text_width = state["ln_final.weight"].shape[0]
    vision_layers = _count_layers(state, "visual.transformer.resblocks.")
    has_av = any(".vis_audio_attn." in k for k in state)
    values = dict(
        image_size=patch * grid, patch_size=patch, vision_width=vision_width,
        vision_layers=vision_layers, vision_heads=max(1, vision_width // 64),
        vocab_size=state["token_embedding.weight"].shape[0],
        context_length=state["positional_embedding"].shape[0], text_width=text_width,
        text_layers=_count_layers(state, "transformer.resblocks."), text_heads=max(1, text_width // 64),
        embed_dim=state["text_projection"].shape[1],
        mlp_ratio=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / vision_width,
        layer_order="released", fusion="eclipse" if has_av else "none", a2v_mode="softmax",
        a2v_time="own",
    )
    if "visual.mlp_audio.weight" in state:
        values["audio_dim"] = state["visual.mlp_audio.weight"].shape[1]
    for flag, (field_name, off, on) in OFFICIAL_FLAGS.items():
        if flag in overrides:
            values[field_name] = on if int(overrides.pop(flag)) else off
    base = ModelConfig.preset("base").to_dict()
    base.update(values)
    base["name"] = "official"
    base.update(overrides)
    if base["fusion"] in ("eclipse", "a2v") and not has_av:
        raise ValueError("this checkpoint has no audiovisual blocks (vis_audio_attn); load it with "
                         "fusion='none'")
    return ModelConfig.from_dict(base)


def _split_in_proj(state, src: str, dst: str, out: Dict[str, Tensor]) -> None:
    """nn.MultiheadAttention's packed in_proj [3D, D] -> our q/k/v projections."""
    for p in ("weight", "bias"):
        q, k, v = state[f"{src}.in_proj_{p}"].chunk(3, dim=0)
        out[f"{dst}.q_proj.{p}"], out[f"{dst}.k_proj.{p}"], out[f"{dst}.v_proj.{p}"] = q, k, v
        out[f"{dst}.out_proj.{p}"] = state[f"{src}.out_proj.{p}"]


def official_to_ours(state: Mapping[str, Tensor], cfg: ModelConfig) -> Tuple[Dict[str, Tensor], list]:
    """Map official names onto ours. Returns (our tensors, names of theirs that were not used)."""
    out: Dict[str, Tensor] = {
        "visual.patch_embed.weight": state["visual.conv1.weight"],
        "visual.class_embedding": state["visual.class_embedding"],
        "visual.position_embedding": state["visual.positional_embedding"],
        "visual.proj.weight": state["visual.proj"].T,
        "text.token_embedding.weight": state["token_embedding.weight"],
        "text.position_embedding": state["positional_embedding"],
        "text.proj.weight": state["text_projection"].T,
        "logit_scale": state["logit_scale"],
    }
    for ours, theirs in (("visual.ln_pre", "visual.ln_pre"), ("visual.ln_post", "visual.ln_post"),
                         ("text.ln_final", "ln_final")):
        for p in ("weight", "bias"):
            out[f"{ours}.{p}"] = state[f"{theirs}.{p}"]
    towers = (("visual.blocks", "visual.transformer.resblocks", cfg.vision_layers),
              ("text.blocks", "transformer.resblocks", cfg.text_layers))
    for ours_prefix, their_prefix, layers in towers:
        for i in range(layers):
            src, dst = f"{their_prefix}.{i}", f"{ours_prefix}.{i}"
            _split_in_proj(state, f"{src}.attn", f"{dst}.attn", out)
            for theirs, ours in _BLOCK_NAMES.items():
                for p in ("weight", "bias"):
                    out[f"{dst}.{ours}.{p}"] = state[f"{src}.{theirs}.{p}"]
    if cfg.fusion in ("eclipse", "a2v"):
        for p in ("weight", "bias"):
            out[f"audio_proj.{p}"] = state[f"visual.mlp_audio.{p}"]
        for i in cfg.av_layer_set:
            src, dst = f"visual.transformer.resblocks.{i}", f"av_blocks.{i}"
            for theirs, ours in _AV_NAMES.items():
                if ours.startswith("v2a_") and cfg.fusion != "eclipse":
                    continue  # their yb_dual=0: V2A exists in the checkpoint but is never run
                if theirs.endswith("_attn"):
                    _split_in_proj(state, f"{src}.{theirs}", f"{dst}.{ours}", out)
                else:
                    for p in ("weight", "bias"):
                        out[f"{dst}.{ours}.{p}"] = state[f"{src}.{theirs}.{p}"]
    used = set()
    for k in state:
        base = k.rsplit(".", 1)[0]
        if any(k.startswith(p) for p in ("visual.conv1", "visual.class_embedding",
                                         "visual.positional_embedding", "visual.proj",
                                         "token_embedding", "positional_embedding",
                                         "text_projection", "logit_scale", "visual.ln_",
                                         "ln_final", "visual.mlp_audio.")):
            used.add(k)
        elif re.match(r"(visual\.)?transformer\.resblocks\.\d+\.(attn|ln_1|ln_2|mlp|vis_audio_|audio_vis_)", base):
            used.add(k)
    return out, sorted(set(state) - used)


def load_official(cls, path_or_state_dict, **overrides):
    """``ECLIPSE.from_official``: see the module docstring."""
    if isinstance(path_or_state_dict, Mapping):
        state = dict(path_or_state_dict)
        source = "state dict"
    else:
        source = str(path_or_state_dict)
        if not Path(source).exists():
            raise FileNotFoundError(f"official checkpoint {source} does not exist")
        state = read_state_dict(Path(source))
    state = _strip_prefixes(state)
    cfg = config_from_official(state, **overrides)
    try:
        ours, unused = official_to_ours(state, cfg)
    except KeyError as exc:
        raise KeyError(f"{source}: missing tensor {exc} needed for fusion={cfg.fusion!r}") from None
    if unused:
        log.info("from_official: ignored %d tensors the model does not use (e.g. %s)",
                 len(unused), unused[:3])
    model = cls(cfg)
    _resize_positions(ours, cfg)
    _assign(model, ours, source)
    return model


# ------------------------------------------------------------------ our own format
def save_pretrained(model, path) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(dict(model.state_dict()), path / "model.safetensors")
    atomic_write_text(model.config.to_json(), path / "config.json")


def load_pretrained(cls, path):
    path = Path(path)
    for f in ("config.json", "model.safetensors"):
        if not (path / f).exists():
            raise FileNotFoundError(f"{path / f} not found: expected a directory written by "
                                    "ECLIPSE.save_pretrained")
    cfg = ModelConfig.from_dict(json.loads((path / "config.json").read_text()))
    model = cls(cfg)
    state = read_state_dict(path / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
