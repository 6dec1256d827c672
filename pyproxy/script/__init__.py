"""The script engine's run-time side: what compiled route blocks call and read."""
