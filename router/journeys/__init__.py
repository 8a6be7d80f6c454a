"""Journeys: messages the router decides to send, and when, from what members do."""
