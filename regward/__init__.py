"""Regward: self-hosted registry access management for Docker Engine."""

__version__ = "0.1.0"
