"""GraphFlow: business-process templates compiled to durable Temporal workflows."""
