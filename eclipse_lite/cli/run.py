"""The main job's commands on the bundled benchmark: make-data, pretrain, train, eval, ablate,
report, demo (``train``/``eval`` hand real data, the base preset, to ``eclipse_lite.cli.realdata``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from eclipse_lite.checkpoints import read_state_dict
from eclipse_lite.cli.common import (
    CommandError,
    add_common,
    add_data_arg,
    add_real_data_args,
    configs,
)
from eclipse_lite.cli.realdata import eval_real, train_real
from eclipse_lite.config import ModelConfig
from eclipse_lite.data.benchmark import check_data_dir, default_data_dir, load_benchmark
from eclipse_lite.data.synth import generate as synth
from eclipse_lite.model import ECLIPSE
from eclipse_lite.overrides import parse_sets
from eclipse_lite.studies.ablate import run_ablation
from eclipse_lite.studies.demo import (
    demo_train_config,
    finetune_and_test,
    pretrain_config_for,
    rewrite_report,
    run_demo,
)
from eclipse_lite.train.config import TrainConfig
from eclipse_lite.train.distributed import main_process_first
from eclipse_lite.train.finetune import score_split
from eclipse_lite.train.pretrain import pretrained_towers
from eclipse_lite.train.results import write_results


def add_parsers(sub) -> None:
    p = sub.add_parser("make-data", help="generate the bundled audiovisual benchmark")
    p.add_argument("--preset", "--size", dest="preset", default="tiny",
                   help="benchmark size: ci, tiny, small, large (default tiny)")
    p.add_argument("--out", default=None, help="default data/generated/SIZE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--force", action="store_true", help="replace an existing different benchmark")
    p.set_defaults(func=cmd_make_data)

    p = sub.add_parser("pretrain", help="pretrain the tiny CLIP and the audio encoder (cached)")
    add_common(p, "data/generated")
    add_data_arg(p)
    p.add_argument("--force", action="store_true", help="retrain even when cached")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("train", help="fine-tune one model and evaluate it on the test split")
    add_common(p, "runs/train")
    add_data_arg(p)
    add_real_data_args(p, clip=True)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a split")
    add_common(p, "runs/eval")
    add_data_arg(p)
    add_real_data_args(p)
    p.add_argument("--checkpoint", required=True, help="a folder with model.safetensors (+ config.json)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("ablate", help="the paper's ablation grid at small scale")
    add_common(p, "runs/ablate")
    add_data_arg(p)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--groups", default=None,
                   help="comma-separated subset of: fusion,blocks,frames,window,sampling,modalities")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("report", help="re-write report.md and plots from a run's results.json")
    p.add_argument("--run", default="runs/demo")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the main job: data, pretraining, 3 models, report")
    add_common(p, "runs/demo")
    add_data_arg(p)
    p.add_argument("--seeds", type=int, default=1, help="fine-tune each model with this many seeds")
    p.set_defaults(func=cmd_demo)


def _data_dir(args) -> Path:
    return Path(args.data) if args.data else default_data_dir(args.preset)


def _towers(cfg: ModelConfig, data_dir: Path, force: bool = False):
    return pretrained_towers(cfg, data_dir / "pretrained", pretrain_config_for(cfg.name), force=force)


def cmd_make_data(args: argparse.Namespace) -> None:
    out = Path(args.out) if args.out else Path("data") / "generated" / args.preset
    if args.preset not in synth.SIZES:
        raise CommandError(f"unknown benchmark size {args.preset!r}; known: {', '.join(synth.SIZES)}")
    synth.make_benchmark(out, size=args.preset, seed=args.seed, workers=args.workers,
                         overwrite=args.force)
    print(f"benchmark written to {out}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    cfg, _ = configs(args)
    if cfg.name == "base":
        raise CommandError("the base preset starts from CLIP's weights and a VGGSound audio encoder; "
                           "pretraining here is for ci/tiny")
    _, _, info = _towers(cfg, _data_dir(args), force=args.force)
    print(json.dumps({k: v for k, v in info.items() if not k.endswith("_losses")}, indent=2))


def cmd_train(args: argparse.Namespace) -> None:
    if args.preset == "base" or args.clip:
        return train_real(args)
    if args.audio_features or args.vggsound:
        raise CommandError("--audio-features and --vggsound go with --clip (fine-tuning CLIP's weights "
                           "on real data); the ci and tiny presets use their pretrained towers")
    cfg, train_over = configs(args)
    data_dir = _data_dir(args)
    check_data_dir(data_dir, args.preset)
    tc = demo_train_config(args.preset, **train_over)
    # under torchrun, rank 0 pretrains and decodes into the caches; the other ranks then read them
    with main_process_first(tc.device):
        clip_state, encoder, _ = _towers(cfg, data_dir)
        clips = load_benchmark(data_dir, cfg, encoder)
    res = finetune_and_test(cfg.fusion, cfg, clips, clip_state, tc, Path(args.out), tc.seed,
                            resume=args.resume)
    write_results(Path(args.out) / "results.json", {"t2v": res["t2v"], "v2t": res["v2t"]},
                  model_config=cfg, train_config=tc, seed=tc.seed)
    print(f"test T2V {json.dumps(res['t2v'])}\ntest V2T {json.dumps(res['v2t'])}")


def _load_checkpoint(args: argparse.Namespace, model_sets) -> ECLIPSE:
    """The model of ``--checkpoint``: its config.json, else ``--preset`` with ``--set``."""
    ckpt = Path(args.checkpoint)
    if (ckpt / "config.json").exists():
        if model_sets:
            raise CommandError(f"{ckpt} has a config.json, which fixes the model: --set "
                               f"{' '.join(model_sets)} would be ignored; drop it")
        return ECLIPSE.from_pretrained(ckpt)
    cfg, _ = configs(args)
    model = ECLIPSE(cfg)
    model.load_state_dict(read_state_dict(ckpt / "model.safetensors"))
    return model


def cmd_eval(args: argparse.Namespace) -> None:
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
    model = _load_checkpoint(args, model_sets)
    cfg = model.config
    if args.preset == "base" or args.audio_features or args.vggsound or cfg.name in ("base", "from_clip"):
        return eval_real(args, model, workers)
    data_dir = _data_dir(args)
    check_data_dir(data_dir, cfg.name)   # before minutes of pretraining, not after
    _, encoder, _ = _towers(cfg, data_dir)
    clips = load_benchmark(data_dir, cfg, encoder)
    metrics = score_split(model, clips[args.split], num_workers=workers,
                          device=None if args.device == "auto" else args.device)
    write_results(Path(args.out) / "results.json", {"t2v": metrics["t2v"], "v2t": metrics["v2t"]},
                  model_config=cfg, seed=None)
    print(f"{args.split} T2V {json.dumps(metrics['t2v'])}\n{args.split} V2T {json.dumps(metrics['v2t'])}")


def cmd_ablate(args: argparse.Namespace) -> None:
    cfg, train_over = configs(args)
    groups = args.groups.split(",") if args.groups else None
    run_ablation(Path(args.out), cfg, data_dir=Path(args.data) if args.data else None,
                 seeds=range(args.seeds), groups=groups, train_overrides=train_over)


def cmd_report(args: argparse.Namespace) -> None:
    rewrite_report(Path(args.run))


def cmd_demo(args: argparse.Namespace) -> None:
    _, train_over = configs(args)                    # validates the preset and every --set
    model_over, _ = parse_sets(args.sets, ModelConfig, TrainConfig)
    if "fusion" in model_over:
        raise CommandError("the demo trains audio-only, video-only and ECLIPSE; --set fusion=... "
                           "does not apply (use `eclipse-lite train --set fusion=...` for one model)")
    run_demo(Path(args.out), preset=args.preset, seeds=range(args.seeds),
             data_dir=Path(args.data) if args.data else None, train_overrides=train_over,
             model_overrides=model_over)
    print(f"report: {Path(args.out) / 'report.md'}")
