"""One trial: build the model, train it with pruning and early stopping, score and record it."""
