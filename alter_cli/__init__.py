"""alter: multi-task learners on small language models with Mixture-of-Task-Adapters (MTA)."""

__version__ = "0.1.0"
