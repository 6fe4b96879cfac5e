"""Training: the builder of a run (model, loss, optimiser, state, step), the step, the loop, the
metric writer."""
