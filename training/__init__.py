"""What train.py runs besides the model, the data and the schedule, one concern per module:

- ``config``: every config check before any work, the error types, the resolvers conf/ uses
- ``components``: the plug points — what a YAML file names with ``_target_`` (optim, logger, eval), built
- ``build``: the one build of a run, every part in order, and what the loop does with it besides the update
- ``engine``: the model as a run trains it, and one optimizer update (``TrainStep``)
- ``optim``, ``evaluation``, ``loggers`` (with ``wandb_logger``): the three plug points and what they ship
- ``budget``: T from ``trainer.max_steps``, ``max_tokens`` or ``max_time``, before update 0
- ``checkpoint``: atomic checkpoints, resume, full and sharded state
- ``distributed``: process group, device, precision, compilation, DDP/FSDP wrapping
- ``signals``: graceful stops on SIGTERM/SIGINT
- ``launch``: what train.py's Hydra edge does around a run (a sweep job's name and failures, ranks' command lines)
- ``summary``, ``plots``, ``report``, ``secrets``: what a run and a sweep write at their end, and what must never
  be written
"""
