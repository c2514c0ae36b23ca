"""The agent tools' names: what a task spec may ask for, checked at intake.

A leaf (it imports nothing), so the task model and the CLI know the names without loading the
tools themselves and their HTTP client; agent/tools.py checks that its catalogue matches.
"""

NAMES = frozenset({"calculator", "clock", "fetch", "recall", "remember"})
