"""Training: the recipe, the loop, evaluation, checkpoints, pretraining, several processes.

    from eclipse_lite.train import TrainConfig, fit, evaluate
    tc = TrainConfig(epochs=5, batch_size=32, lr_clip=1e-4, lr_new=1e-4)
    result = fit(model, train_set, val_set, tc, out_dir="runs/x")      # resume=True continues
    metrics = evaluate(model, test_set)            # {"t2v": {...}, "v2t": {...}, "n": N}

    config.py    TrainConfig, precision, seeding       optim.py     AdamW groups, warm-up + cosine
    step.py      batch → inputs, one optimizer step    state.py     checkpoints, RNG, resume
    loop.py      fit                                   evaluate.py  evaluate
    results.py   results.json                          pretrain.py  the tiny towers (ci/tiny)
    realdata.py  real datasets into fit                distributed.py  torchrun
"""
from eclipse_lite.train.config import TrainConfig, seed_everything
from eclipse_lite.train.evaluate import evaluate
from eclipse_lite.train.loop import FitResult, fit
from eclipse_lite.train.results import write_results

__all__ = ["TrainConfig", "seed_everything", "fit", "FitResult", "evaluate", "write_results"]
