"""What workers do with claimed work: send through a channel, record the outcome, fall back."""
