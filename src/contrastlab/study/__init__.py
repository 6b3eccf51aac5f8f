"""The study: a grid of scenarios x seeds run as DVC experiments, and the report built from their results."""
