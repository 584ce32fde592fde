"""A run's training: the stages, the head, its search, fine-tuning."""
