"""What train.py runs besides the model, the data and the schedule, one concern per module:

- ``config``: every config check before any work, the error types, the resolvers conf/ uses
- ``build``: the parts of a run (data, model, optimizer, schedule, checkpointer, metric sinks) and its reports
- ``engine``: one optimizer update, and an evaluation pass
- ``optim``: the optimizer and its parameter groups
- ``budget``: T from ``trainer.max_steps``, ``max_tokens`` or ``max_time``, before update 0
- ``checkpoint``: atomic checkpoints, resume, full and sharded state
- ``distributed``: process group, device, precision, compilation, DDP/FSDP wrapping
- ``signals``: graceful stops on SIGTERM/SIGINT
- ``launch``: what train.py's Hydra edge does around a run (a sweep job's name and failures, ranks' command lines)
- ``metrics``, ``wandb_logger``, ``plots``, ``secrets``: everything that reports, and what it must not reveal
"""
