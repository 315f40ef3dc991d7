"""Masks: anatomy, anonymization (deface) and brain masks, and defacing."""
