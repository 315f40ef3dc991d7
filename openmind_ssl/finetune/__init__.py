"""Fine-tuning pretrained networks on downstream segmentation and classification tasks, and the
benchmark over checkpoints, schedules and datasets."""
