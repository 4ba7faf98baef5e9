"""A study: its configuration, the launch that validates and opens it, and the workers that claim
and train its trials until the budget is spent."""
