"""Real data, the ``base`` preset (``eclipse_lite.train.realdata``): ``train --clip``, ``eval`` of a
base checkpoint, and ``cache-audio``.

``--data`` holds the generic manifests train/val/test.jsonl (data/README.md); the audio comes
precomputed (``--audio-features DIR``, the paper's setting, written by ``cache-audio``) or on the
fly from the VGGSound ResNet-18 (``--vggsound WEIGHTS``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from eclipse_lite.cli.common import CommandError, configs, one_line
from eclipse_lite.config import PRESETS, ModelConfig
from eclipse_lite.data.cache import MissingFeaturesError, StaleCacheError
from eclipse_lite.model import ECLIPSE
from eclipse_lite.overrides import parse_sets
from eclipse_lite.studies.demo import demo_train_config
from eclipse_lite.train.config import TrainConfig, seed_everything
from eclipse_lite.train.distributed import (
    cleanup_distributed,
    is_main_process,
    main_process_first,
    resolve_device,
)
from eclipse_lite.train.finetune import score_split, train_and_test
from eclipse_lite.train.loop import _progress_enabled
from eclipse_lite.train.realdata import (
    SPLITS,
    build_audio_cache,
    make_datasets,
    open_audio_cache,
    read_splits,
    vggsound_encoder,
)
from eclipse_lite.train.results import write_results

# ModelConfig fields a preset gives a model loaded with --clip (the rest are CLIP's sizes)
INPUT_FIELDS = ("num_frames", "audio_dim", "audio_encoder", "sample_rate", "audio_window_s", "n_mels")
CACHE_FIELDS = ("num_frames", "audio_window_s", "sample_rate")   # --set keys that change a cache


def add_parsers(sub) -> None:
    p = sub.add_parser("cache-audio", help="precompute per-frame audio embeddings of real data "
                                           "(VGGSound ResNet-18) into a feature cache")
    p.add_argument("--preset", default="base", help=f"{', '.join(PRESETS)} (default base)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="num_frames, audio_window_s, sample_rate as for train; num_workers = "
                        "decoding processes")
    p.add_argument("--device", default="auto", help="where the encoder runs: auto, cpu, cuda ...")
    p.add_argument("--vggsound", required=True, metavar="PATH", help="VGGSound ResNet-18 weights")
    p.add_argument("--data", required=True, help="folder with train/val/test.jsonl (those present)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the cache folder; pass it to train and eval as --audio-features")
    p.set_defaults(func=cmd_cache_audio)


def _real_items(args, splits):
    if not args.data:
        raise CommandError(f"--data DIR is required for real data: a folder with "
                           f"{', '.join(s + '.jsonl' for s in splits)} (see data/README.md)")
    try:
        return read_splits(args.data, splits)
    except ValueError as exc:
        raise CommandError(one_line(exc)) from None


def _cache_hint(args) -> str:
    sets = "".join(f" --set {s}" for s in args.sets if s.split("=", 1)[0].strip() in CACHE_FIELDS)
    return (f"`eclipse-lite cache-audio --preset {args.preset} --vggsound WEIGHTS --data {args.data} "
            f"--out {args.audio_features}{sets}` (or eclipse_lite.train.realdata.build_audio_cache)")


def _audio_source(args, cfg: ModelConfig, items):
    """``(FeatureCache, None)`` for --audio-features, ``(None, encoder)`` for --vggsound."""
    if bool(args.audio_features) == bool(args.vggsound):
        got = "both" if args.audio_features else "neither"
        raise CommandError(f"got {got} of --audio-features and --vggsound: pass --audio-features DIR "
                           "(per-frame audio embeddings precomputed by `eclipse-lite cache-audio`, "
                           "the paper's setting) or --vggsound WEIGHTS (the VGGSound ResNet-18, run "
                           "on the fly)")
    try:
        if args.vggsound:
            return None, vggsound_encoder(cfg, args.vggsound)
        return open_audio_cache(args.audio_features, items, cfg, _cache_hint(args)), None
    except (ValueError, MissingFeaturesError, StaleCacheError) as exc:
        raise CommandError(one_line(exc)) from None


def _load_clip(name: str, overrides: dict):
    try:
        return ECLIPSE.from_clip(name, **overrides)
    except (OSError, ValueError, KeyError) as exc:
        raise CommandError(f"--clip {name} could not be loaded: {one_line(exc)} A local folder "
                           "written by transformers' CLIPModel.save_pretrained works offline: "
                           "--clip DIR") from None


def train_real(args: argparse.Namespace) -> None:
    """``train --clip ... --data ... (--audio-features DIR | --vggsound PATH)``."""
    cfg, train_over = configs(args)                   # validates the preset and every --set
    model_over, _ = parse_sets(args.sets, ModelConfig, TrainConfig)
    if not args.clip:
        raise CommandError("the base preset starts from CLIP's weights: pass --clip NAME_OR_PATH, a "
                           "Hugging Face hub id (openai/clip-vit-base-patch32) or a folder written "
                           "by CLIPModel.save_pretrained")
    if "gradient_checkpointing" in model_over:       # a ModelConfig field that fit sets from tc
        train_over["gradient_checkpointing"] = model_over["gradient_checkpointing"]
    try:
        tc = (TrainConfig.paper(**{"epochs": 5, **train_over}) if args.preset == "base"
              else demo_train_config(args.preset, **train_over))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    items = _real_items(args, SPLITS)
    cache, encoder = _audio_source(args, cfg, items)
    seed_everything(tc.seed)                          # the audio projection's initial weights
    # under torchrun, rank 0 fetches the CLIP weights into the hub cache; the others then read it
    with main_process_first(tc.device):
        model = _load_clip(args.clip, {**{k: getattr(cfg, k) for k in INPUT_FIELDS}, **model_over})
    # compact batches (uint8 frames, whole waveforms; windows cut on the GPU) carry waveforms, so
    # only with an encoder: RetrievalDataset refuses compact=True with cached features
    compact = encoder is not None and resolve_device(tc.device).type == "cuda"
    data = make_datasets(items, model.config, cache, compact=compact)
    out = Path(args.out)
    res = train_and_test(model, data, tc, out, encoder, resume=args.resume)
    if is_main_process():
        run = {"clip": args.clip, "data": str(args.data), "best_epoch": res["best_epoch"],
               "val": res["val"], "steps": res["steps"], "train_seconds": res["train_seconds"],
               "audio": (f"features {args.audio_features}" if cache is not None
                         else f"vggsound {args.vggsound}")}
        write_results(out / "results.json", {"t2v": res["t2v"], "v2t": res["v2t"]},
                      model_config=model.config, train_config=tc, seed=tc.seed, extra={"run": run})
        print(f"test T2V {json.dumps(res['t2v'])}\ntest V2T {json.dumps(res['v2t'])}")
    cleanup_distributed()


def eval_real(args: argparse.Namespace, model: ECLIPSE, num_workers: int) -> None:
    """``eval --checkpoint ... --data ... (--audio-features DIR | --vggsound PATH)``."""
    cfg = model.config
    items = _real_items(args, (args.split,))
    cache, encoder = _audio_source(args, cfg, items)
    device = resolve_device(args.device)
    data = make_datasets(items, cfg, cache, compact=encoder is not None and device.type == "cuda")
    metrics = score_split(model, data[args.split], encoder, device=device, num_workers=num_workers)
    write_results(Path(args.out) / "results.json", {"t2v": metrics["t2v"], "v2t": metrics["v2t"]},
                  model_config=cfg, seed=None, extra={"run": {"checkpoint": str(args.checkpoint),
                                                               "data": str(args.data),
                                                               "split": args.split}})
    print(f"{args.split} T2V {json.dumps(metrics['t2v'])}\n{args.split} V2T {json.dumps(metrics['v2t'])}")


def cmd_cache_audio(args: argparse.Namespace) -> None:
    cfg, train_over = configs(args)
    splits = [s for s in SPLITS if (Path(args.data) / f"{s}.jsonl").is_file()] or list(SPLITS)
    items = _real_items(args, splits)
    try:
        encoder = vggsound_encoder(cfg, args.vggsound)
    except ValueError as exc:
        raise CommandError(one_line(exc)) from None
    # under torchrun, rank 0 builds the cache; the other ranks then find every entry fresh
    with main_process_first(args.device) as info:
        report = build_audio_cache([it for s in splits for it in items[s]], cfg, encoder, args.out,
                                   device=info.device, workers=train_over.get("num_workers", 0),
                                   progress=_progress_enabled(True))
    print(f"audio features in {args.out} ({', '.join(splits)}): {report['computed']} computed, "
          f"{report['cached']} already cached, {len(report['failed'])} failed to decode")
