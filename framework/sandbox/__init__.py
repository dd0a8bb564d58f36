"""What a graph from a stranger may do: sandboxed prompt templates and expressions and their budget, the Python it
may run (the code-trust policy), the files and folders it may read, the hosts API keys may go to, redaction, and
names that become paths in a run directory."""
