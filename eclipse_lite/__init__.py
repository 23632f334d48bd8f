"""eclipse-lite: a runnable, readable reproduction of ECLIPSE (Lin et al., ECCV 2022).

    import eclipse_lite as el
    cfg = el.ModelConfig.preset("tiny")
    model = el.ECLIPSE(cfg)                                  # or el.ECLIPSE.from_clip(hub id or dir)
    ids, mask = model.tokenize(["a dog barks"])              # el.tokenize(texts, context_length=...)
    sim = model.similarity(model.text_features(ids, mask), model.video_features(frames, audio))
    el.retrieval_metrics(sim)                                # {"R@1", "R@5", "R@10", "MdR", "MnR"}

    data_dir = el.make_benchmark("data/generated/ci", size="ci")    # the bundled benchmark
    clips = el.load_benchmark(data_dir, cfg, audio_encoder)          # {"train"|"val"|"test": ...}
    result = el.fit(model, train_set, val_set, el.TrainConfig(epochs=2), out_dir="runs/x")
    metrics = el.evaluate(model, test_set)

Everything else lives in its module (docs/architecture.md): the model layer (config, tokenizer,
attention, clip, audio, audio_encoders, model, heads, losses, metrics, checkpoints, files),
data/, train/, studies/, course/ and the command line, cli/.
"""
from eclipse_lite.config import CLIP_MEAN, CLIP_STD, PRESETS, ModelConfig
from eclipse_lite.data.benchmark import load_benchmark
from eclipse_lite.data.synth.generate import make_benchmark
from eclipse_lite.losses import symmetric_infonce
from eclipse_lite.metrics import format_metrics, retrieval_metrics
from eclipse_lite.model import ECLIPSE, TextFeatures, VideoFeatures
from eclipse_lite.tokenizer import tokenize
from eclipse_lite.train import TrainConfig, evaluate, fit

__all__ = ["ModelConfig", "PRESETS", "CLIP_MEAN", "CLIP_STD", "ECLIPSE", "TextFeatures",
           "VideoFeatures", "tokenize", "retrieval_metrics", "format_metrics", "symmetric_infonce",
           "TrainConfig", "fit", "evaluate", "make_benchmark", "load_benchmark"]
__version__ = "0.1.0"
