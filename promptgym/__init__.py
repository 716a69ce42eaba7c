"""promptgym: Gymnasium environments for black-box prompt tuning of frozen language models."""

__version__ = "0.1.0"
