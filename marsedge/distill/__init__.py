"""Distillation: a frozen teacher's knowledge into a student small enough for the rover.

    config.py     DistillConfig: the training config plus the `distill:` section
    losses.py     PixelKDLoss, ChannelWiseLoss, FeatureLoss (one loss, one class, formula in the docstring)
    terms.py      the registry of distillation terms (`@register_term`): kd, cwd, feature
    teacher.py    FrozenTeacher: eval mode, no gradients, no_grad, bf16/fp16 on GPU
    cache.py      LogitCache: the teacher's logits per un-augmented frame, float16 .npy, keyed by the
                  teacher checkpoint's SHA-256 and the preprocessing spec
    data.py       DistillFrames: train.py's labelled frames plus unlabelled frames
    objective.py  DistillObjective (the weighted loss), StudentWithAdapters (what the loop trains)
    mode.py       the registered `distill` training mode (a Job of marsedge.train.engine.job)
    cli.py        `marsedge distill` / `python distill.py`
"""
