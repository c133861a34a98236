"""The training engine every mode runs through: `job.run_job` (the lifecycle of a run), `loop.fit`
(the one loop), `state` (what the loop and checkpointing share), `checkpointing` (last.pt/best.pt and
exact resume), `history` (epoch_XXX.pt), `evaluation` (val, with `ema`: the moving average of the
weights beside them), `distributed` (DDP plumbing), `optim` (optimisers and schedules), `runlog`
(metrics files), `watch` with `progress`, `tensorboard` and `curves` (what a person sees while it
trains), `summary` (runs/<name>/summary.json). docs/watching-training.md describes what a run shows.
"""
