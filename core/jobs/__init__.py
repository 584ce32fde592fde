"""Background jobs: the queue, its executors, kinds that survive a restart."""
