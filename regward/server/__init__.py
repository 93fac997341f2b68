"""The policy server: organizations, Registry Access settings, Save & Apply, Activity, the feed."""
