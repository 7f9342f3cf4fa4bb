"""Training as a plan of phases: `fit_head` (the head trained on cached backbone features) and `fit`
(Lightning's `trainer.fit` on the network). `transferlab.tasks.train` runs the plan; see `plan.py`."""
