"""Pretraining machinery: the trainer, optimizers and schedules, metrics and FLOP counting."""
