"""Training: SpladeLoss and its terms, the torch-exact AdamW and clipping, schedules, training data and
batch order, the training config, device meshes and sharding rules, metrics logs, and the one trainer.

May import: jsplade.files, jsplade.backbones, jsplade.checkpoints, jsplade.splade.
"""
