"""The training engine every mode runs through: `job.run_job` (the lifecycle of a run), `loop.fit`
(the one loop), `state` (what the loop and checkpointing share), `checkpointing` (last.pt/best.pt and
exact resume), `distributed` (DDP plumbing), `optim` (optimisers and schedules), `runlog` (metrics files).
"""
