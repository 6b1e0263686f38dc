"""The training engine: loop, checkpoints, distributed helpers, logging, schedules, validation."""
