"""JSON Schemas of MoEngage's documented request bodies, shipped as package data."""
