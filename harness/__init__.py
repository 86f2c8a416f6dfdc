"""harness: a benchmark and leaderboard harness for chest X-ray representation learning."""

__version__ = "0.1.0"
