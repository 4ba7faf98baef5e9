"""Small sweep files the tests write to disk: a valid one that trains in seconds."""

#: Two trials of a tiny MLP on digits, 2 epochs each.
SWEEP = """study = "s"
trials = 2
[space]
l2 = {type = "float", low = 1e-6, high = 1e-2, log = true}
units = {type = "int", low = 8, high = 32}
epochs = 2
[data]
source = "digits"
train_fraction = 0.3
"""
