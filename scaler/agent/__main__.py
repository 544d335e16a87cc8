"""``python -m scaler.agent``: the same as ``garo agent`` (container entry point)."""

from scaler.cli import agent

if __name__ == "__main__":
    agent()
