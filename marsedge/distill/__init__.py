"""Distillation: a frozen teacher's knowledge into a student small enough for the rover.

    losses.py   PixelKDLoss, ChannelWiseLoss, FeatureLoss (one loss, one class, formula in the docstring)
    teacher.py  FrozenTeacher: eval mode, no gradients, no_grad, bf16/fp16 on GPU
    cache.py    LogitCache: the teacher's logits per un-augmented frame, float16 .npy, keyed by the
                teacher checkpoint's SHA-256 and the preprocessing spec
    data.py     DistillFrames: train.py's labelled frames plus unlabelled frames
    loop.py     the `distill` mode of marsedge.train.loop.fit (config, objective, run)
    cli.py      `marsedge distill` / `python distill.py`
"""
