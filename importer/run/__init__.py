"""The run: feed, ordering, batching, delivery, outcome, wiring."""
