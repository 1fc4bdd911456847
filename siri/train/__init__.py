"""Training internals: the loop (:mod:`siri.train.trainer`), evaluation during training,
checkpoints, the process group, mixed precision and the optimizer, step metrics, fault
injection for the reliability tests, and the per-device memory plan."""
