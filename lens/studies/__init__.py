"""Study runners: the findings' experiments wired to models and task sets (used by the CLI and reproduce)."""
