"""Teams of agents, each agent's availability and capacity, and who gets the next conversation
(round robin or least busy, within the team's business hours)."""
