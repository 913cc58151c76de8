"""MONAI Label app for monai_crossd (see main.py)."""
