"""Training: the recipe (TrainConfig), the loop (fit), evaluation, pretraining, several processes."""
