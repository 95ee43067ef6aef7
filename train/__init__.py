"""Training (thin): the recommender and its two-stage trainer, and judge distillation (`train.judge`)."""
