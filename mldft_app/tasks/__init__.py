"""Tasks: what a run does (`task:` in the input), each one function of (config, comm)."""
