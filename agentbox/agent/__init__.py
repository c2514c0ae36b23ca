"""Agent tasks: the tool-using loop and its tools."""
