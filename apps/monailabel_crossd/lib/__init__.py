"""Infer/train tasks, transforms and bundle staging of the Cross-D MONAI Label app."""
