"""Users, teams and API keys: the identity log folded in memory, and access rules."""
