"""The ``eclipse-lite`` command.

    eclipse-lite make-data --preset tiny                 # the bundled benchmark → data/generated/tiny
    eclipse-lite pretrain  --preset tiny                 # tiny CLIP + audio encoder (cached)
    eclipse-lite train     --preset tiny --set fusion=eclipse --set epochs=12 --out runs/eclipse
    eclipse-lite eval      --checkpoint runs/eclipse/best --preset tiny
    eclipse-lite ablate    --preset tiny --seeds 3 --out runs/ablate
    eclipse-lite bench     --preset base                 # FLOPs / memory / speed (eclipse_lite.studies.bench)
    eclipse-lite saliency  --checkpoint runs/eclipse/best   # sound-localisation maps and scores
    eclipse-lite report    --run runs/demo               # re-write report.md from results.json
    eclipse-lite demo      --out runs/demo               # the main job (make demo)

Real data, the ``base`` preset (``eclipse_lite.train.realdata``): ``--data`` holds the generic manifests
train/val/test.jsonl (data/README.md), ``--clip`` a Hugging Face hub id or a save_pretrained folder,
and the audio comes precomputed (``--audio-features``, the paper's setting) or on the fly from the
VGGSound ResNet-18 (``--vggsound``)::

    eclipse-lite cache-audio --preset base --vggsound H.pth.tar --data data/anet --out features/anet
    eclipse-lite train --preset base --clip openai/clip-vit-base-patch32 --data data/anet \
        --audio-features features/anet --out runs/anet [--set epochs=5 --set num_workers=8]
    eclipse-lite eval  --preset base --checkpoint runs/anet/best --data data/anet \
        --audio-features features/anet

``--set key=value`` sets any ModelConfig or TrainConfig field. Multi-GPU:
``torchrun --nproc_per_node N -m eclipse_lite.cli train ...`` (same flags).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from eclipse_lite.config import PRESETS, ModelConfig


class CommandError(Exception):
    """An error with a message a person can act on (printed without a traceback)."""


def _common(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--preset", default="tiny",
                   help=f"model/data size: {', '.join(PRESETS)} (default tiny)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ModelConfig or TrainConfig field (repeatable)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--out", default=out_default, help=f"output folder (default {out_default})")


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None,
                   help="benchmark folder with train/val/test.jsonl (default data/generated/PRESET)")


def _real_data_args(p: argparse.ArgumentParser, clip: bool = False) -> None:
    if clip:
        p.add_argument("--clip", default=None, metavar="NAME_OR_PATH",
                       help="start from these CLIP weights: a Hugging Face hub id or a folder "
                            "written by CLIPModel.save_pretrained (required for --preset base)")
    p.add_argument("--audio-features", default=None, metavar="DIR",
                   help="real data: a cache of per-frame audio embeddings (eclipse-lite cache-audio)")
    p.add_argument("--vggsound", default=None, metavar="PATH",
                   help="real data: VGGSound ResNet-18 weights; embeds the audio on the fly")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eclipse-lite", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-data", help="generate the bundled audiovisual benchmark")
    p.add_argument("--preset", "--size", dest="preset", default="tiny",
                   help="benchmark size: ci, tiny, small, large (default tiny)")
    p.add_argument("--out", default=None, help="default data/generated/SIZE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="replace an existing different benchmark")

    p = sub.add_parser("pretrain", help="pretrain the tiny CLIP and the audio encoder (cached)")
    _common(p, "data/generated")
    _data_arg(p)
    p.add_argument("--force", action="store_true", help="retrain even when cached")

    p = sub.add_parser("train", help="fine-tune one model and evaluate it on the test split")
    _common(p, "runs/train")
    _data_arg(p)
    _real_data_args(p, clip=True)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")

    p = sub.add_parser("eval", help="evaluate a checkpoint on a split")
    _common(p, "runs/eval")
    _data_arg(p)
    _real_data_args(p)
    p.add_argument("--checkpoint", required=True, help="a folder with model.safetensors (+ config.json)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])

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

    p = sub.add_parser("ablate", help="the paper's ablation grid at small scale")
    _common(p, "runs/ablate")
    _data_arg(p)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--groups", default=None,
                   help="comma-separated subset of: fusion,blocks,frames,window,sampling,modalities")

    sub.add_parser("bench", help="FLOPs, memory and throughput (see python -m eclipse_lite.studies.bench -h)",
                   add_help=False)
    sub.add_parser("saliency", help="sound-localisation maps (see python -m eclipse_lite.studies.saliency -h)",
                   add_help=False)

    p = sub.add_parser("report", help="re-write report.md and plots from a run's results.json")
    p.add_argument("--run", default="runs/demo")

    p = sub.add_parser("demo", help="the main job: data, pretraining, 3 models, report")
    _common(p, "runs/demo")
    _data_arg(p)
    p.add_argument("--seeds", type=int, default=1, help="fine-tune each model with this many seeds")
    return parser


# ------------------------------------------------------------------ helpers
def _configs(args):
    from eclipse_lite.overrides import parse_sets
    from eclipse_lite.train.config import TrainConfig
    if args.preset not in PRESETS:
        raise CommandError(f"unknown preset {args.preset!r}; known presets: {', '.join(PRESETS)}")
    try:
        model_over, train_over = parse_sets(args.sets, ModelConfig, TrainConfig)
        cfg = ModelConfig.preset(args.preset, **model_over)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.device != "auto":
        train_over["device"] = args.device
    return cfg, train_over


def _data_dir(args) -> Path:
    from eclipse_lite.studies.demo import default_data_dir
    return Path(args.data) if args.data else default_data_dir(args.preset)


def _towers(cfg: ModelConfig, data_dir: Path, force: bool = False):
    from eclipse_lite.studies.demo import pretrain_config_for
    from eclipse_lite.train.pretrain import pretrained_towers
    return pretrained_towers(cfg, data_dir / "pretrained", pretrain_config_for(cfg.name), force=force)


# ------------------------------------------------------------------ real data (eclipse_lite.train.realdata)
# ModelConfig fields a preset gives a model loaded with --clip (the rest are CLIP's sizes)
INPUT_FIELDS = ("num_frames", "audio_dim", "audio_encoder", "sample_rate", "audio_window_s", "n_mels")
CACHE_FIELDS = ("num_frames", "audio_window_s", "sample_rate")   # --set keys that change a cache


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _real_items(args, splits):
    from eclipse_lite.train.realdata import read_splits
    if not args.data:
        raise CommandError(f"--data DIR is required for real data: a folder with "
                           f"{', '.join(s + '.jsonl' for s in splits)} (see data/README.md)")
    try:
        return read_splits(args.data, splits)
    except ValueError as exc:
        raise CommandError(_one_line(exc)) from None


def _cache_hint(args) -> str:
    sets = "".join(f" --set {s}" for s in args.sets if s.split("=", 1)[0].strip() in CACHE_FIELDS)
    return (f"`eclipse-lite cache-audio --preset {args.preset} --vggsound WEIGHTS --data {args.data} "
            f"--out {args.audio_features}{sets}` (or eclipse_lite.train.realdata.build_audio_cache)")


def _audio_source(args, cfg: ModelConfig, items):
    """``(FeatureCache, None)`` for --audio-features, ``(None, encoder)`` for --vggsound."""
    from eclipse_lite.data.cache import MissingFeaturesError, StaleCacheError
    from eclipse_lite.train.realdata import open_audio_cache, vggsound_encoder
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
        raise CommandError(_one_line(exc)) from None


def _load_clip(name: str, overrides: dict):
    from eclipse_lite.model import ECLIPSE
    try:
        return ECLIPSE.from_clip(name, **overrides)
    except (OSError, ValueError, KeyError) as exc:
        raise CommandError(f"--clip {name} could not be loaded: {_one_line(exc)} A local folder "
                           "written by transformers' CLIPModel.save_pretrained works offline: "
                           "--clip DIR") from None


def _train_real(args) -> None:
    """``train --clip ... --data ... (--audio-features DIR | --vggsound PATH)``."""
    from eclipse_lite.train.distributed import cleanup_distributed, is_main_process, main_process_first, resolve_device
    from eclipse_lite.overrides import parse_sets
    from eclipse_lite.studies.demo import demo_train_config
    from eclipse_lite.train.realdata import SPLITS, make_datasets, train_and_test
    from eclipse_lite.train.config import TrainConfig, seed_everything
    from eclipse_lite.train.results import write_results
    cfg, train_over = _configs(args)                  # validates the preset and every --set
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


def _eval_real(args, model, num_workers: int) -> None:
    """``eval --checkpoint ... --data ... (--audio-features DIR | --vggsound PATH)``."""
    from eclipse_lite.train.distributed import resolve_device
    from eclipse_lite.train.realdata import make_datasets, score_split
    from eclipse_lite.train.results import write_results
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


# ------------------------------------------------------------------ commands
def cmd_make_data(args) -> None:
    from eclipse_lite.data.synth import generate as synth
    out = Path(args.out) if args.out else Path("data") / "generated" / args.preset
    if args.preset not in synth.SIZES:
        raise CommandError(f"unknown benchmark size {args.preset!r}; known: {', '.join(synth.SIZES)}")
    synth.make_benchmark(out, size=args.preset, seed=args.seed, workers=args.workers,
                         overwrite=args.force)
    print(f"benchmark written to {out}")


def cmd_pretrain(args) -> None:
    cfg, _ = _configs(args)
    if cfg.name == "base":
        raise CommandError("the base preset starts from CLIP's weights and a VGGSound audio encoder; "
                           "pretraining here is for ci/tiny")
    _, _, info = _towers(cfg, _data_dir(args), force=args.force)
    print(json.dumps({k: v for k, v in info.items() if not k.endswith("_losses")}, indent=2))


def cmd_train(args) -> None:
    from eclipse_lite.train.distributed import main_process_first
    from eclipse_lite.studies.demo import check_data_dir, demo_train_config, finetune_and_test, load_clips
    from eclipse_lite.train.results import write_results
    if args.preset == "base" or args.clip:
        return _train_real(args)
    if args.audio_features or args.vggsound:
        raise CommandError("--audio-features and --vggsound go with --clip (fine-tuning CLIP's weights "
                           "on real data); the ci and tiny presets use their pretrained towers")
    cfg, train_over = _configs(args)
    data_dir = _data_dir(args)
    check_data_dir(data_dir, args.preset)
    tc = demo_train_config(args.preset, **train_over)
    # under torchrun, rank 0 pretrains and decodes into the caches; the other ranks then read them
    with main_process_first(tc.device):
        clip_state, encoder, _ = _towers(cfg, data_dir)
        clips = load_clips(data_dir, cfg, encoder)
    res = finetune_and_test(cfg.fusion, cfg, clips, clip_state, tc, Path(args.out), tc.seed,
                            resume=args.resume)
    write_results(Path(args.out) / "results.json", {"t2v": res["t2v"], "v2t": res["v2t"]},
                  model_config=cfg, train_config=tc, seed=tc.seed)
    print(f"test T2V {json.dumps(res['t2v'])}\ntest V2T {json.dumps(res['v2t'])}")


def cmd_eval(args) -> None:
    from eclipse_lite.model import ECLIPSE
    from eclipse_lite.overrides import parse_sets
    from eclipse_lite.studies.demo import check_data_dir, load_clips
    from eclipse_lite.train.config import TrainConfig
    from eclipse_lite.train.evaluate import evaluate
    from eclipse_lite.train.results import write_results
    ckpt = Path(args.checkpoint)
    if not (ckpt / "model.safetensors").exists():
        raise CommandError(f"{ckpt} has no model.safetensors: pass a folder written by training "
                           "(e.g. runs/train/best)")
    # --set num_workers=N (DataLoader workers) is used; any other --set would change the model
    model_sets = [s for s in args.sets if s.split("=", 1)[0].strip() != "num_workers"]
    try:
        _, train_over = parse_sets(args.sets, ModelConfig, TrainConfig)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    workers = train_over.get("num_workers", 0)
    if (ckpt / "config.json").exists():
        if model_sets:
            raise CommandError(f"{ckpt} has a config.json, which fixes the model: --set "
                               f"{' '.join(model_sets)} would be ignored; drop it")
        model = ECLIPSE.from_pretrained(ckpt)
    else:
        from eclipse_lite.checkpoints import read_state_dict
        cfg, _ = _configs(args)
        model = ECLIPSE(cfg)
        model.load_state_dict(read_state_dict(ckpt / "model.safetensors"))
    cfg = model.config
    if args.preset == "base" or args.audio_features or args.vggsound or cfg.name in ("base", "from_clip"):
        return _eval_real(args, model, workers)
    data_dir = _data_dir(args)
    check_data_dir(data_dir, cfg.name)   # before minutes of pretraining, not after
    _, encoder, _ = _towers(cfg, data_dir)
    clips = load_clips(data_dir, cfg, encoder)
    metrics = evaluate(model, clips[args.split], batch_size=64, num_workers=workers,
                       device=None if args.device == "auto" else args.device)
    write_results(Path(args.out) / "results.json", {"t2v": metrics["t2v"], "v2t": metrics["v2t"]},
                  model_config=cfg, seed=None)
    print(f"{args.split} T2V {json.dumps(metrics['t2v'])}\n{args.split} V2T {json.dumps(metrics['v2t'])}")


def cmd_ablate(args) -> None:
    from eclipse_lite.studies.ablate import run_ablation
    cfg, train_over = _configs(args)
    groups = args.groups.split(",") if args.groups else None
    run_ablation(Path(args.out), cfg, data_dir=Path(args.data) if args.data else None,
                 seeds=range(args.seeds), groups=groups, train_overrides=train_over)


def cmd_report(args) -> None:
    from eclipse_lite.studies.demo import rewrite_report
    rewrite_report(Path(args.run))


def cmd_demo(args) -> None:
    from eclipse_lite.overrides import parse_sets
    from eclipse_lite.studies.demo import run_demo
    from eclipse_lite.train.config import TrainConfig
    _, train_over = _configs(args)                   # validates the preset and every --set
    model_over, _ = parse_sets(args.sets, ModelConfig, TrainConfig)
    if "fusion" in model_over:
        raise CommandError("the demo trains audio-only, video-only and ECLIPSE; --set fusion=... "
                           "does not apply (use `eclipse-lite train --set fusion=...` for one model)")
    run_demo(Path(args.out), preset=args.preset, seeds=range(args.seeds),
             data_dir=Path(args.data) if args.data else None, train_overrides=train_over,
             model_overrides=model_over)
    print(f"report: {Path(args.out) / 'report.md'}")


def cmd_cache_audio(args) -> None:
    from eclipse_lite.train.distributed import main_process_first
    from eclipse_lite.train.realdata import SPLITS, build_audio_cache, vggsound_encoder
    from eclipse_lite.train.loop import _progress_enabled
    cfg, train_over = _configs(args)
    splits = [s for s in SPLITS if (Path(args.data) / f"{s}.jsonl").is_file()] or list(SPLITS)
    items = _real_items(args, splits)
    try:
        encoder = vggsound_encoder(cfg, args.vggsound)
    except ValueError as exc:
        raise CommandError(_one_line(exc)) from None
    # under torchrun, rank 0 builds the cache; the other ranks then find every entry fresh
    with main_process_first(args.device) as info:
        report = build_audio_cache([it for s in splits for it in items[s]], cfg, encoder, args.out,
                                   device=info.device, workers=train_over.get("num_workers", 0),
                                   progress=_progress_enabled(True))
    print(f"audio features in {args.out} ({', '.join(splits)}): {report['computed']} computed, "
          f"{report['cached']} already cached, {len(report['failed'])} failed to decode")


COMMANDS = {"make-data": cmd_make_data, "pretrain": cmd_pretrain, "train": cmd_train, "eval": cmd_eval,
            "cache-audio": cmd_cache_audio, "ablate": cmd_ablate, "report": cmd_report,
            "demo": cmd_demo}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("bench", "saliency"):  # their own argument parsers
        import importlib
        try:
            importlib.import_module(f"eclipse_lite.studies.{argv[0]}").main(argv[1:])
        except (CommandError, FileNotFoundError, ValueError) as exc:
            print(f"eclipse-lite {argv[0]}: error: {exc}\n(python -m eclipse_lite.{argv[0]} "
                  f"{' '.join(argv[1:])} shows the traceback)", file=sys.stderr)
            return 2
        return 0
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        COMMANDS[args.command](args)
    except (CommandError, FileNotFoundError) as exc:
        print(f"eclipse-lite {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
