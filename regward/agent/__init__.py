"""The agent: sign-in, policy sync, the Docker AuthZ plugin and the registry egress proxy."""
