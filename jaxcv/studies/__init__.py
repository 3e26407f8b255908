"""Studies: experiments that need more than one training run (e.g. train, convert, evaluate)."""
