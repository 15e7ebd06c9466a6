"""Nebula background processes: broker, task decorator, actors, scheduler and beat."""
