"""The bundled benchmark: minute-long generated videos with sound, captions and a ground-truth oracle.

    from eclipse_lite.data.synth import make_benchmark, box_at, sounding_sources, oracle_metrics

    plan.py          what happens in each video (objects, motions, sound events, their times)
    visuals.py       the frames           sounds.py   the soundtrack      captions.py  the paragraphs
    generate.py      make_benchmark: videos + train/val/test manifests, reproducible from a seed
    ground_truth.py  each video's plan, and which objects sound where at a time
    oracle.py        which caption facts each frame/window reveals; the oracle's R@1

The names below are the benchmark's vocabulary that the notebooks and studies read; the rest
lives in its module.
"""
from eclipse_lite.data.synth.captions import sound_caption
from eclipse_lite.data.synth.generate import (
    SIZES,
    SOUND_CLASSES,
    make_benchmark,
    pretrain_rng,
    sample_frame_caption,
    sample_sound_clip,
)
from eclipse_lite.data.synth.ground_truth import load_plans, sounding_sources, visible_objects
from eclipse_lite.data.synth.oracle import MIN_OVERLAP_S, oracle_metrics, revealed_facts
from eclipse_lite.data.synth.plan import EVENT_KINDS, FRAME_GRID, uniform_frame_times
from eclipse_lite.data.synth.sounds import SOUND_PHRASES, ambient_bed, render_sound
from eclipse_lite.data.synth.visuals import box_at

__all__ = ["make_benchmark", "SIZES", "SOUND_CLASSES", "pretrain_rng", "sample_frame_caption",
           "sample_sound_clip", "sound_caption", "load_plans", "sounding_sources",
           "visible_objects", "MIN_OVERLAP_S", "oracle_metrics", "revealed_facts", "EVENT_KINDS",
           "FRAME_GRID", "uniform_frame_times", "SOUND_PHRASES", "ambient_bed", "render_sound",
           "box_at"]
