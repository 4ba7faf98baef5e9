"""The data a trial sees: built-in sets and user files split into train/val/test, and folds."""
