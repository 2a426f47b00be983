"""Canary rollouts: state, routing, judgement, the controller and where state is kept."""
