"""Sources hand raw bytes to the inbox and acknowledge only after the commit."""
