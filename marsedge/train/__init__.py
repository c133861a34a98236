"""Training (torch): one engine, registered modes, and the parts the supervised modes share.

    cli.py            `marsedge train` / `python train.py`: config -> registered mode -> run_job
    config.py         TrainConfig (YAML + dotted overrides; a mode subclasses it for its section)
    engine/           job.py (Job, FitPlan, register_mode, run_job: the lifecycle of every run),
                      loop.py (fit), state.py, checkpointing.py, distributed.py, optim.py, runlog.py
    modes/            finetune.py, pretrain.py, semisup.py, linear_eval.py (+ marsedge.distill.mode)
    supervised.py     datasets, unlabelled frames, evaluator, loss building, starting weights
    losses.py         segmentation losses (CE, inverse frequency, recall, ...)

A new mode is one module in modes/ with one `@register_mode("name", ItsConfig)` Job subclass.
Self-supervised tools (contrastive losses, clustering, features) are in marsedge.ssl.
"""
